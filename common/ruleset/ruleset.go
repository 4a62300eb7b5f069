// Package ruleset is the contract between the runner's shield (pre-start and
// live operations) and the terok-shield-hook OCI hook: it renders the nftables
// scripts (docs/shield-hook.md, The ruleset, rule by rule) from validated
// values, and verifies and classifies
// a live ruleset (docs/shield-hook.md, Verification and states).
//
// Everything here is pure text generation and inspection; running nft is the
// caller's job. All inputs are validated before being written into a script:
// a value that is not an IP/CIDR, port or identifier is an error (or,
// for element lists, skipped and reported), never interpolated.
package ruleset

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Constants of the rulesets (docs/shield-hook.md, The ruleset, rule by rule).
const (
	Family = "inet"
	Table  = "terok_shield"

	SetAllowV4   = "allow_v4"
	SetAllowV6   = "allow_v6"
	SetDenyV4    = "deny_v4"
	SetDenyV6    = "deny_v6"
	SetGatewayV4 = "gateway_v4"
	SetGatewayV6 = "gateway_v6"

	PastaDNS          = "169.254.1.1"
	PastaHostLoopback = "169.254.1.2"
	SlirpDNS          = "10.0.2.3"
	SlirpDNSV6        = "fd00::3"
	SlirpGatewayV4    = "10.0.2.2"
	SlirpGatewayV6    = "fd00::2"

	NFLogGroup = 100
	// NFQueueNum is the NFQUEUE queue of interactive mode, held by the
	// container's resolver (docs/shield-resolver.md, Interactive approval).
	NFQueueNum = 100

	PrefixDenied  = "TEROK_SHIELD_DENIED"
	PrefixPrivate = "TEROK_SHIELD_PRIVATE"
	PrefixAllowed = "TEROK_SHIELD_ALLOWED"
	PrefixBypass  = "TEROK_SHIELD_BYPASS"
	PrefixQueued  = "TEROK_SHIELD_QUEUED"
	PrefixLearned = "TEROK_SHIELD_LEARNED"

	RejectStmt = "reject with icmpx admin-prohibited"

	// QueueStmt is the verdict of interactive mode's queue rules: queue
	// NFQueueNum, one queue, no bypass and no fanout. Without bypass the
	// kernel drops a packet when nobody holds the queue (docs/shield-hook.md,
	// The ruleset, rule by rule). nft lists the native expression as
	// `queue to 100` and the xtables NFQUEUE target through nft's
	// compatibility layer as `queue num 100`; verification accepts both.
	QueueStmt = "queue num 100"
)

// QueueMatches are the new connections interactive mode hands to the
// queue, in the table's order: a TCP SYN (no ACK, RST or FIN), any UDP
// packet and an ICMP or ICMPv6 echo request. Only packets no earlier rule
// decided reach them: established flows were accepted, the deny sets,
// special ranges and host ports other than the terok services rejected.
// Written the way nft 1.0.x lists them.
func QueueMatches() []string {
	return []string{
		"tcp flags syn / fin,syn,rst,ack",
		"meta l4proto udp",
		"icmp type echo-request",
		"icmpv6 type echo-request",
	}
}

// RefusedRejects are the first two rules of the interactive output chain
// (docs/shield-hook.md, The ruleset, rule by rule): a packet the resolver
// refused and handed back with RefusedMark (verdict NF_REPEAT) is
// rejected before any rule that could accept it, a TCP SYN with a reset
// (ECONNREFUSED at once, in both families), anything else with ICMP
// admin-prohibited. Not logged: the packet was logged QUEUED on its way
// into the queue and its refusal is a decision record. Written the way
// nft 1.0.x lists them.
func RefusedRejects() []string {
	mark := fmt.Sprintf("meta mark 0x%08x", RefusedMark)
	return []string{
		mark + " meta l4proto tcp counter reject with tcp reset",
		mark + " counter " + RejectStmt,
	}
}

// BuiltinForwarders returns the DNS forwarders the network modes provide
// inside every container (slirp4netns's IPv4 and IPv6 forwarder, pasta's).
// Whichever one is configured, unmarked traffic to all of them is rejected
// in the head: they are special addresses, but the special-range rejects
// come after the explicit allow sets, and a profile allow of 10.0.0.0/8 or
// fc00::/7 must not hand a container process unfiltered DNS (issue 11).
func BuiltinForwarders() []string { return []string{SlirpDNS, SlirpDNSV6, PastaDNS} }

// SlirpGateways returns the fixed slirp4netns host-loopback gateway addresses
// that pre-start writes into the gateway sets (docs/shield-hook.md, The ruleset, rule by rule).
func SlirpGateways() []string { return []string{SlirpGatewayV4, SlirpGatewayV6} }

// Options are the values interpolated into the table definition.
type Options struct {
	// DNS is the upstream forwarder (IPv4 or IPv6). Only packets carrying
	// ResolverMark (the per-container resolver's) may send DNS to it; every
	// other packet to it is rejected, whatever its protocol or port.
	DNS string
	// LoopbackPorts are the host-service TCP ports reachable on the gateway.
	LoopbackPorts []int
	// HostLoopback is the address under which the host's loopback services
	// are reached besides the gateway: PastaHostLoopback in pasta mode, ""
	// under slirp4netns, where 169.254.1.2 is not the host and gets no
	// rule at all (docs/shield-hook.md, "The ruleset, rule by rule"). No
	// other value is accepted: verification admits host-loopback rules for
	// that address only.
	HostLoopback string
	// Interactive adds the queue rules of interactive mode (QueueMatches,
	// QueueStmt, logged TEROK_SHIELD_QUEUED) before the terminal
	// reject (docs/shield-hook.md, The ruleset, rule by rule).
	Interactive bool
	// Learn selects the LEARNED terminal rule of learn mode
	// (docs/shield-hook.md, The ruleset, rule by rule): a new connection
	// that reached the end of the chain is logged and accepted instead
	// of refused. Everything before it is the enforcing chain unchanged:
	// closed DNS, the deny sets, the special-range rejects (the host's
	// gateway, private ranges, metadata) and the host's own addresses in
	// the deny sets, so only public destinations get through.
	Learn bool
}

type checked struct {
	dns    string
	dnsSel string // "ip" or "ip6"
	// others are the built-in forwarders other than dns, rejected
	// right after it.
	others []string
	ports  []int
	hostLo string
}

// addrSel is the nft selector of a canonical address: "ip" or "ip6".
func addrSel(a string) string {
	if IsIPv6(a) {
		return "ip6"
	}
	return "ip"
}

// otherForwarders are BuiltinForwarders without dns (canonical), in the
// order of BuiltinForwarders.
func otherForwarders(dns string) []string {
	var out []string
	for _, f := range BuiltinForwarders() {
		if f != dns {
			out = append(out, f)
		}
	}
	return out
}

func (o Options) check() (checked, error) {
	var c checked
	if o.Interactive && o.Learn {
		return c, fmt.Errorf("learn and interactive exclude each other")
	}
	dns, err := CanonicalIP(o.DNS)
	if err != nil || strings.Contains(dns, "/") {
		return c, fmt.Errorf("upstream DNS: Invalid IP/CIDR: '%s' (must be a single address)", o.DNS)
	}
	c.dns, c.dnsSel = dns, addrSel(dns)
	c.others = otherForwarders(dns)
	seen := map[int]bool{}
	for _, p := range o.LoopbackPorts {
		if err := ValidPort(p); err != nil {
			return c, fmt.Errorf("loopback ports: %w", err)
		}
		if !seen[p] {
			seen[p] = true
			c.ports = append(c.ports, p)
		}
	}
	switch o.HostLoopback {
	case "":
	case PastaHostLoopback:
		c.hostLo = PastaHostLoopback
	default:
		return c, fmt.Errorf("host loopback address '%s': only %s (pasta) is supported", o.HostLoopback, PastaHostLoopback)
	}
	return c, nil
}

func logStmt(prefix string) string {
	return fmt.Sprintf("log group %d prefix \"%s: \"", NFLogGroup, prefix)
}

// setDecls declares the sets of either mode: the explicit allow sets
// (intervals, no timeout), the learned dns sets (single addresses, each
// element with its own timeout or none), the deny sets (hook mode only)
// and the gateway sets.
func setDecls(b *strings.Builder, deny bool) {
	fmt.Fprintf(b, "table %s %s {\n", Family, Table)
	fmt.Fprintf(b, "    set %s { type ipv4_addr; flags interval; }\n", SetAllowV4)
	fmt.Fprintf(b, "    set %s { type ipv6_addr; flags interval; }\n", SetAllowV6)
	fmt.Fprintf(b, "    set %s { type ipv4_addr; flags timeout; }\n", SetDNSV4)
	fmt.Fprintf(b, "    set %s { type ipv6_addr; flags timeout; }\n", SetDNSV6)
	if deny {
		fmt.Fprintf(b, "    set %s { type ipv4_addr; flags interval; }\n", SetDenyV4)
		fmt.Fprintf(b, "    set %s { type ipv6_addr; flags interval; }\n", SetDenyV6)
	}
	fmt.Fprintf(b, "    set %s { type ipv4_addr; }\n", SetGatewayV4)
	fmt.Fprintf(b, "    set %s { type ipv6_addr; }\n\n", SetGatewayV6)
}

// head writes the rules common to both modes: loopback, then closed DNS:
// the forwarder is reachable on port 53 only by packets carrying
// ResolverMark, which only the resolver (running with CAP_NET_ADMIN over
// the netns, outside the container's reach) can set, and every other
// packet to it is rejected, as is every packet to the other built-in
// forwarders (BuiltinForwarders). These come before the conntrack accept: an
// unmarked socket that binds the source port of one of the resolver's
// answered queries would otherwise ride that established flow to the
// forwarder (kernel-tested). Then conntrack, ND, the host-service ports on
// the gateways and, in pasta mode, on the host-loopback address. The
// gateway and host-loopback rules come before the special-range rejects
// because 10.0.2.2 and 169.254.1.2 lie in special ranges.
func (c checked) head(b *strings.Builder, policy string, interactive bool) {
	fmt.Fprintf(b, "    chain output {\n        type filter hook output priority filter; policy %s;\n", policy)
	if interactive {
		// Before everything: a packet the resolver refused meets no
		// other rule, so it can be accepted by none.
		for _, r := range RefusedRejects() {
			fmt.Fprintf(b, "        %s\n", r)
		}
	}
	b.WriteString("        oifname \"lo\" accept\n")
	fmt.Fprintf(b, "        meta mark 0x%08x udp dport 53 %s daddr %s accept\n", ResolverMark, c.dnsSel, c.dns)
	fmt.Fprintf(b, "        meta mark 0x%08x tcp dport 53 %s daddr %s accept\n", ResolverMark, c.dnsSel, c.dns)
	fmt.Fprintf(b, "        %s daddr %s %s %s\n", c.dnsSel, c.dns, logStmt(PrefixPrivate), RejectStmt)
	for _, f := range c.others {
		fmt.Fprintf(b, "        %s daddr %s %s %s\n", addrSel(f), f, logStmt(PrefixPrivate), RejectStmt)
	}
	b.WriteString("        ct state established,related accept\n")
	b.WriteString(ndOutput)
	for _, p := range c.ports {
		fmt.Fprintf(b, "        tcp dport %d ip daddr @%s accept\n", p, SetGatewayV4)
		fmt.Fprintf(b, "        tcp dport %d ip6 daddr @%s accept\n", p, SetGatewayV6)
	}
	if c.hostLo != "" {
		for _, p := range c.ports {
			fmt.Fprintf(b, "        tcp dport %d ip daddr %s accept\n", p, c.hostLo)
		}
	}
}

// specialRejects rejects every special range (special.go). In hook mode
// they sit between the explicit allow sets and the learned dns sets, so
// an address learned from DNS can never open one (DNS rebinding).
func specialRejects(b *strings.Builder) {
	for _, r := range specialV4 {
		fmt.Fprintf(b, "        ip daddr %s %s %s\n", r, logStmt(PrefixPrivate), RejectStmt)
	}
	for _, r := range specialV6 {
		fmt.Fprintf(b, "        ip6 daddr %s %s %s\n", r, logStmt(PrefixPrivate), RejectStmt)
	}
}

// IPv6 neighbour discovery. Not in the spec's ruleset text, but without it
// IPv6 stops working as soon as the gateway's neighbour entry needs
// (re)resolving: solicitations leave through the output chain and
// advertisements arrive through the input chain, neither is covered by
// conntrack, and both chains end in drop/reject (found by the hook's
// real-kernel tests). Only ND message types are accepted, only towards
// link-local/multicast destinations or the gateway (a neighbour solicitation
// to an arbitrary global address would be a way out), and inbound only with
// hop limit 255 (originated on the link, RFC 4861).
const ndOutput = `        icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } ip6 daddr { fe80::/10, ff02::/16 } accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 daddr @gateway_v6 accept
`

const ndInput = `icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept`

const inputChain = `    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state established,related accept
        ` + ndInput + `
        drop
    }
}
`

// Hook renders the enforcing table (docs/shield-hook.md, "The ruleset, rule
// by rule").
func Hook(o Options) (string, error) {
	c, err := o.check()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	setDecls(&b, true)
	c.head(&b, "drop", o.Interactive)
	// Deny before allow: an explicit allow CIDR must not reopen an address
	// denied inside it.
	fmt.Fprintf(&b, "        ip daddr @%s %s counter %s\n", SetDenyV4, logStmt(PrefixDenied), RejectStmt)
	fmt.Fprintf(&b, "        ip6 daddr @%s %s counter %s\n", SetDenyV6, logStmt(PrefixDenied), RejectStmt)
	// Explicit entries may open a special range deliberately, so they come
	// before the special rejects; learned addresses come after them.
	fmt.Fprintf(&b, "        ip daddr @%s %s counter accept\n", SetAllowV4, logStmt(PrefixAllowed))
	fmt.Fprintf(&b, "        ip6 daddr @%s %s counter accept\n", SetAllowV6, logStmt(PrefixAllowed))
	specialRejects(&b)
	fmt.Fprintf(&b, "        ip daddr @%s %s counter accept\n", SetDNSV4, logStmt(PrefixAllowed))
	fmt.Fprintf(&b, "        ip6 daddr @%s %s counter accept\n", SetDNSV6, logStmt(PrefixAllowed))
	if o.Interactive {
		for _, m := range QueueMatches() {
			fmt.Fprintf(&b, "        %s %s counter %s\n", m, logStmt(PrefixQueued), QueueStmt)
		}
	}
	switch {
	case o.Learn:
		fmt.Fprintf(&b, "        %s counter accept\n", logStmt(PrefixLearned))
	default:
		fmt.Fprintf(&b, "        %s counter\n", logStmt(PrefixDenied))
		fmt.Fprintf(&b, "        %s\n", RejectStmt)
	}
	b.WriteString("    }\n\n")
	b.WriteString(inputChain)
	return b.String(), nil
}

// Bypass renders the shield-down table (docs/shield-hook.md, "The
// ruleset, rule by rule", Bypass): output policy accept, every new
// connection logged, DNS still closed (only the resolver reaches the
// forwarder; with resolver.open it forwards every name), the special
// ranges still rejected unless allowAll.
// Options.Interactive and Options.Learn are ignored.
func Bypass(o Options, allowAll bool) (string, error) {
	c, err := o.check()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	setDecls(&b, false)
	c.head(&b, "accept", false)
	fmt.Fprintf(&b, "        ct state new %s counter\n", logStmt(PrefixBypass))
	if !allowAll {
		specialRejects(&b)
	}
	b.WriteString("    }\n\n")
	b.WriteString(inputChain)
	return b.String(), nil
}

// Replace prefixes script with the deletion of the existing table so that
// the swap is one atomic nft transaction (docs/shield.md, Live operations). With tableExists false the
// script is returned unchanged (deleting a missing table is an error).
func Replace(tableExists bool, script string) string {
	if !tableExists {
		return script
	}
	return fmt.Sprintf("delete table %s %s\n", Family, Table) + script
}

// Set kinds for element commands.
const (
	KindAllow   = "allow"
	KindDeny    = "deny"
	KindGateway = "gateway"
)

// AddElements renders the `add element` commands (docs/shield-hook.md, The
// ruleset, rule by rule) for kind ("allow",
// "deny", "gateway" or "dns"): one line per family, "" when no valid
// address. Invalid addresses, addresses covered by another one of the list
// (interval sets refuse overlapping elements) and, for the dns sets, CIDRs
// and special addresses are skipped. Elements carry no timeout: in the dns
// sets an element without one is permanent.
//
// The permanent parameter is ignored (no element carries a timeout any
// more); it stays for source compatibility.
func AddElements(kind string, addrs []string, permanent bool) string {
	s, _ := Elements("add", kind, addrs, permanent)
	return s
}

// DeleteElements renders the `delete element` commands for kind.
func DeleteElements(kind string, addrs []string) string {
	s, _ := Elements("delete", kind, addrs, false)
	return s
}

// Elements is AddElements/DeleteElements with the skipped inputs reported,
// for callers that warn about them. An unknown verb or kind yields "" and
// every address as skipped. An address learned from DNS (kind "dns") that
// lies in a special range is never added: it is reported as skipped.
//
// The permanent parameter is ignored, as in AddElements.
func Elements(verb, kind string, addrs []string, permanent bool) (string, []string) {
	_ = permanent
	if (verb != "add" && verb != "delete") || (kind != KindAllow && kind != KindDeny && kind != KindGateway && kind != KindDNS) {
		return "", addrs
	}
	v4, v6, skipped := SplitFamilies(addrs)
	if kind == KindGateway || kind == KindDNS {
		// The gateway and dns sets hold single addresses (no interval flag).
		v4, skipped = dropPrefixes(v4, skipped)
		v6, skipped = dropPrefixes(v6, skipped)
	}
	if kind == KindDNS && verb == "add" {
		v4, skipped = dropSpecial(v4, skipped)
		v6, skipped = dropSpecial(v6, skipped)
	}
	// Intervals: only the allow and deny sets have the interval flag, but
	// an overlap-free, duplicate-free list is right for every set.
	v4, v6 = dropCovered(v4), dropCovered(v6)
	var b strings.Builder
	for _, fam := range []struct {
		set   string
		elems []string
	}{{kind + "_v4", v4}, {kind + "_v6", v6}} {
		if len(fam.elems) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s element %s %s %s { %s }\n", verb, Family, Table, fam.set, strings.Join(fam.elems, ", "))
	}
	return b.String(), skipped
}

// dropSpecial removes the special addresses of a canonical single-address
// list, appending them to bad.
func dropSpecial(list, bad []string) ([]string, []string) {
	out := list[:0:0]
	for _, a := range list {
		if ip, err := netip.ParseAddr(a); err != nil || IsSpecial(ip) {
			bad = append(bad, a)
		} else {
			out = append(out, a)
		}
	}
	return out, bad
}

func dropPrefixes(list, bad []string) ([]string, []string) {
	out := list[:0:0]
	for _, a := range list {
		if strings.Contains(a, "/") {
			bad = append(bad, a)
		} else {
			out = append(out, a)
		}
	}
	return out, bad
}

// SplitFamilies canonicalises addrs and splits them into IPv4 and IPv6 lists
// (first occurrence kept, order preserved); invalid inputs are returned in
// skipped.
func SplitFamilies(addrs []string) (v4, v6, skipped []string) {
	seen := map[string]bool{}
	for _, a := range addrs {
		c, err := CanonicalIP(a)
		if err != nil {
			skipped = append(skipped, a)
			continue
		}
		if seen[c] {
			continue
		}
		seen[c] = true
		if IsIPv6(c) {
			v6 = append(v6, c)
		} else {
			v4 = append(v4, c)
		}
	}
	return v4, v6, skipped
}

// dropCovered removes every entry contained in another entry of the list
// (canonical, duplicate-free input), keeping the order of the survivors.
// Sorting by prefix length makes this O(n log n + n·k) with k the number of
// distinct shorter prefixes kept, which stays small for real allowlists.
func dropCovered(list []string) []string {
	if len(list) < 2 {
		return list
	}
	type ent struct {
		idx int
		p   netip.Prefix
	}
	ents := make([]ent, 0, len(list))
	for i, s := range list {
		p, ok := prefixOf(s)
		if !ok {
			continue
		}
		ents = append(ents, ent{i, p})
	}
	sort.SliceStable(ents, func(a, b int) bool { return ents[a].p.Bits() < ents[b].p.Bits() })
	// Index of kept prefixes by length: only non-full-length prefixes can
	// cover anything.
	byBits := map[int]map[netip.Prefix]bool{}
	var lengths []int
	keep := make([]bool, len(list))
	for _, e := range ents {
		coveredBy := false
		for _, l := range lengths {
			if l > e.p.Bits() {
				break
			}
			outer, _ := e.p.Addr().Prefix(l)
			if byBits[l][outer] {
				coveredBy = true
				break
			}
		}
		if coveredBy {
			continue
		}
		keep[e.idx] = true
		if e.p.Bits() < e.p.Addr().BitLen() {
			m := byBits[e.p.Bits()]
			if m == nil {
				m = map[netip.Prefix]bool{}
				byBits[e.p.Bits()] = m
				lengths = append(lengths, e.p.Bits())
				sort.Ints(lengths)
			}
			m[e.p] = true
		}
	}
	out := make([]string, 0, len(list))
	for i, s := range list {
		if keep[i] {
			out = append(out, s)
		}
	}
	return out
}

// Script assembles a complete nft script: the table (hook or bypass mode),
// then the allowlist, learned, deny and gateway elements. It is what
// pre-start writes to ruleset.nft and what `shield up`/`down` apply (with
// ReplaceExisting).
type Script struct {
	Options
	Bypass   bool
	AllowAll bool // bypass only: also drop the special-range rejects
	// Allow is the effective explicit allowlist (IPs and CIDRs of the
	// profile and `shield allow ADDR`); it may open a special range.
	Allow []string
	// Learned are addresses that came from resolving a domain on the host
	// (static tiers, `shield allow DOMAIN`): written to the dns sets
	// without a timeout (permanent), matched after the special-range
	// rejects. Special addresses and CIDRs are skipped, never written.
	Learned  []string
	Deny     []string // ignored in bypass mode (no deny sets)
	Gateways []string // IPv4 and IPv6 gateway addresses
	// ReplaceExisting prefixes `delete table` (docs/shield.md, Live operations).
	ReplaceExisting bool
}

// Render returns the script and the inputs skipped as invalid (or, for
// Learned, special).
func (s Script) Render() (string, []string, error) {
	if s.AllowAll && !s.Bypass {
		return "", nil, fmt.Errorf("allow-all requires bypass (--all requires --down)")
	}
	var table string
	var err error
	if s.Bypass {
		table, err = Bypass(s.Options, s.AllowAll)
	} else {
		table, err = Hook(s.Options)
	}
	if err != nil {
		return "", nil, err
	}
	allow, sk1 := Elements("add", KindAllow, s.Allow, false)
	learned, sk2 := Elements("add", KindDNS, s.Learned, false)
	var deny string
	var sk3 []string
	if !s.Bypass {
		deny, sk3 = Elements("add", KindDeny, s.Deny, false)
	}
	gw, sk4 := Elements("add", KindGateway, s.Gateways, false)
	skipped := append(append(append(sk1, sk2...), sk3...), sk4...)
	return Replace(s.ReplaceExisting, table+allow+learned+deny+gw), skipped, nil
}

// DropCovered removes every entry of a canonical, duplicate-free address
// list that another entry contains, as the element commands do; exported
// for the hook, which builds the same set contents without nft.
func DropCovered(list []string) []string { return dropCovered(list) }
