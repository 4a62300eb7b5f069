// Package nftnl applies a ruleset.Script to a network namespace over
// netlink, without running nft, and verifies what the kernel then holds.
//
// Running nft costs the hook two process starts and two full netlink cache
// dumps (apply, then list to verify): about 30 ms of a container start. The
// hook instead builds the same batch the nft binary would send for the
// script the common/ruleset generator writes, and commits it as one
// transaction. Only a Script recovered by ruleset.ParseScript (text that
// renders back byte for byte) comes here; any other text goes to nft.
// Equivalence with nft is proven by tests that apply both ways in scratch
// namespaces and compare `nft list table` output.
package nftnl

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/ruleset"
)

// Plan is the netlink form of one ruleset.Script: the table's sets with
// their elements, and the rules of both chains, in the order nft would
// create them. It is built once and used both to apply and to verify.
type Plan struct {
	table  *nftables.Table
	sets   []*planSet
	output chainPlan
	input  chainPlan
	// queued: the plan has interactive mode's queue rules; queue is the
	// form their verdict takes in the next batch (Apply falls back from
	// the native expression to the xtables target) and in Verify.
	queued bool
	queue  QueueForm
	// kernelConfig replaces /proc/config.gz in tests ("" = the real one).
	kernelConfig string
}

// QueueForm is how a queue rule's verdict reaches the kernel
// (docs/shield-hook.md, The ruleset, rule by rule).
type QueueForm int

const (
	// QueueNative is nft's queue expression (module nft_queue).
	QueueNative QueueForm = iota
	// QueueCompat is the xtables NFQUEUE target (revision 3) through
	// nft's compatibility expression (nft_compat, xt_NFQUEUE), for
	// kernels built without nft_queue.
	QueueCompat
)

func (f QueueForm) String() string {
	if f == QueueCompat {
		return "xt NFQUEUE"
	}
	return "native queue"
}

// Queue is the form the queue rules took in the last Apply (QueueNative
// for a plan without them).
func (p *Plan) Queue() QueueForm { return p.queue }

type planSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

type chainPlan struct {
	chain *nftables.Chain
	// rules hold the expressions; anon[i] is the anonymous set rule i
	// looks up (at most one per rule in this grammar), or nil.
	rules [][]any
	anon  [][]*planSet
}

// elemChunk bounds the elements per NEWSETELEM message: the element list is
// one netlink attribute, whose length field has 16 bits.
const elemChunk = 512

// NewPlan translates s (which must come from ruleset.ParseScript or have
// been rendered successfully) and the gateways discovered at run time.
func NewPlan(s ruleset.Script, gateways []string) (*Plan, error) {
	if s.ReplaceExisting {
		// The hook deletes a leftover table itself; a script carrying its
		// own `delete table` fails under nft when there is none. Keep
		// that behaviour by leaving such scripts to nft.
		return nil, fmt.Errorf("script with delete table is applied by nft")
	}
	if s.AllowAll && !s.Bypass {
		return nil, fmt.Errorf("allow-all requires bypass")
	}
	dns, err := netip.ParseAddr(s.DNS)
	if err != nil {
		return nil, fmt.Errorf("upstream DNS %q: %w", s.DNS, err)
	}
	var hostLo netip.Addr
	switch s.HostLoopback {
	case "":
	case ruleset.PastaHostLoopback:
		hostLo = netip.MustParseAddr(ruleset.PastaHostLoopback)
	default:
		return nil, fmt.Errorf("host loopback address %q: only %s is supported", s.HostLoopback, ruleset.PastaHostLoopback)
	}
	p := &Plan{table: &nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.Table}}
	mk := func(name string, v6, interval, hasTimeout bool) *planSet {
		kt := nftables.TypeIPAddr
		if v6 {
			kt = nftables.TypeIP6Addr
		}
		ps := &planSet{set: &nftables.Set{
			Table: p.table, Name: name, KeyType: kt, Interval: interval,
			HasTimeout: hasTimeout, KeyByteOrder: binaryutil.BigEndian,
		}}
		p.sets = append(p.sets, ps)
		return ps
	}
	// The order of ruleset's set declarations.
	allow4 := mk(ruleset.SetAllowV4, false, true, false)
	allow6 := mk(ruleset.SetAllowV6, true, true, false)
	dns4 := mk(ruleset.SetDNSV4, false, false, true)
	dns6 := mk(ruleset.SetDNSV6, true, false, true)
	var deny4, deny6 *planSet
	if !s.Bypass {
		deny4 = mk(ruleset.SetDenyV4, false, true, false)
		deny6 = mk(ruleset.SetDenyV6, true, true, false)
	}
	gw4 := mk(ruleset.SetGatewayV4, false, false, false)
	gw6 := mk(ruleset.SetGatewayV6, true, false, false)

	// Elements, exactly as ruleset.Elements selects them.
	fill := func(kind string, list []string, v4, v6 *planSet) error {
		a4, a6, skipped := ruleset.SplitFamilies(list)
		if len(skipped) > 0 {
			return fmt.Errorf("invalid %s elements %q", kind, skipped)
		}
		for _, f := range []struct {
			ps   *planSet
			list []string
		}{{v4, a4}, {v6, a6}} {
			for _, a := range ruleset.DropCovered(f.list) {
				if err := f.ps.add(a); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := fill(ruleset.KindAllow, s.Allow, allow4, allow6); err != nil {
		return nil, err
	}
	// Learned addresses: ruleset.Render skips special ones, so a parsed
	// script has none; any other Script with one is refused, never applied.
	for _, a := range s.Learned {
		ip, err := netip.ParseAddr(a)
		if err != nil || ruleset.IsSpecial(ip) {
			return nil, fmt.Errorf("learned element %q is not a plain non-special address", a)
		}
	}
	if err := fill(ruleset.KindDNS, s.Learned, dns4, dns6); err != nil {
		return nil, err
	}
	if !s.Bypass {
		if err := fill(ruleset.KindDeny, s.Deny, deny4, deny6); err != nil {
			return nil, err
		}
	}
	// Gateways from the script and the discovered ones: a set holds each
	// address once, and nft's `add element` of a present one is a no-op.
	gwSeen := map[string]bool{}
	var gwAll []string
	for _, g := range append(append([]string{}, s.Gateways...), gateways...) {
		c, err := ruleset.CanonicalIP(g)
		if err != nil || strings.Contains(c, "/") {
			return nil, fmt.Errorf("invalid gateway %q", g)
		}
		if !gwSeen[c] {
			gwSeen[c] = true
			gwAll = append(gwAll, c)
		}
	}
	if err := fill(ruleset.KindGateway, gwAll, gw4, gw6); err != nil {
		return nil, err
	}

	drop, accept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	outPolicy := &drop
	if s.Bypass {
		outPolicy = &accept
	}
	p.output.chain = &nftables.Chain{Name: "output", Table: p.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: outPolicy}
	p.input.chain = &nftables.Chain{Name: "input", Table: p.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop}

	o := &p.output
	if s.Interactive && !s.Bypass {
		// ruleset.RefusedRejects, first: a held packet the resolver
		// refused comes back marked (NF_REPEAT) and meets no other rule.
		o.add(nil, markEq(ruleset.RefusedMark), l4proto(unix.IPPROTO_TCP), &expr.Counter{}, rejectTCPReset())
		o.add(nil, markEq(ruleset.RefusedMark), &expr.Counter{}, reject())
	}
	o.add(nil, meta(expr.MetaKeyOIFNAME, ifname("lo")), verdict(expr.VerdictAccept))
	// Closed DNS (docs/shield-hook.md, "The ruleset, rule by rule"): only
	// the resolver's marked packets reach the forwarder, decided before
	// conntrack so that no unmarked socket rides one of its flows.
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		o.add(nil, markEq(ruleset.ResolverMark), l4proto(proto), dport(53), daddrEq(dns), verdict(expr.VerdictAccept))
	}
	o.add(nil, daddrEq(dns), logExpr(ruleset.PrefixPrivate), reject())
	// The other built-in forwarders, in ruleset's order (it skips the
	// configured one).
	for _, f := range ruleset.BuiltinForwarders() {
		a := netip.MustParseAddr(f)
		if a == dns.Unmap() {
			continue
		}
		o.add(nil, daddrEq(a), logExpr(ruleset.PrefixPrivate), reject())
	}
	o.add(nil, ctState(ctEstablished|ctRelated), verdict(expr.VerdictAccept))
	ndTypes := icmp6Set(p.table, 133, 135, 136)
	ndDst, err := prefixSet(p.table, "fe80::/10", "ff02::/16")
	if err != nil {
		return nil, err
	}
	o.add([]*planSet{ndTypes, ndDst}, nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6),
		payload(expr.PayloadBaseTransportHeader, 0, 1), lookupAnon(ndTypes),
		daddr6(), lookupAnon(ndDst), verdict(expr.VerdictAccept))
	ndTypes2 := icmp6Set(p.table, 135, 136)
	o.add([]*planSet{ndTypes2}, nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6),
		payload(expr.PayloadBaseTransportHeader, 0, 1), lookupAnon(ndTypes2),
		daddr6(), lookup(gw6), verdict(expr.VerdictAccept))
	ports := dedupPorts(s.LoopbackPorts)
	for _, port := range ports {
		o.add(nil, l4proto(unix.IPPROTO_TCP), dport(port), nfproto(unix.NFPROTO_IPV4), daddr4(), lookup(gw4), verdict(expr.VerdictAccept))
		o.add(nil, l4proto(unix.IPPROTO_TCP), dport(port), nfproto(unix.NFPROTO_IPV6), daddr6(), lookup(gw6), verdict(expr.VerdictAccept))
	}
	if hostLo.IsValid() {
		for _, port := range ports {
			o.add(nil, l4proto(unix.IPPROTO_TCP), dport(port), daddrEq(hostLo), verdict(expr.VerdictAccept))
		}
	}
	if s.Bypass {
		o.add(nil, ctState(ctNew), logExpr(ruleset.PrefixBypass), &expr.Counter{})
		if !s.AllowAll {
			if err := o.specialRejects(); err != nil {
				return nil, err
			}
		}
	} else {
		o.add(nil, nfproto(unix.NFPROTO_IPV4), daddr4(), lookup(deny4), logExpr(ruleset.PrefixDenied), &expr.Counter{}, reject())
		o.add(nil, nfproto(unix.NFPROTO_IPV6), daddr6(), lookup(deny6), logExpr(ruleset.PrefixDenied), &expr.Counter{}, reject())
		o.add(nil, nfproto(unix.NFPROTO_IPV4), daddr4(), lookup(allow4), logExpr(ruleset.PrefixAllowed), &expr.Counter{}, verdict(expr.VerdictAccept))
		o.add(nil, nfproto(unix.NFPROTO_IPV6), daddr6(), lookup(allow6), logExpr(ruleset.PrefixAllowed), &expr.Counter{}, verdict(expr.VerdictAccept))
		if err := o.specialRejects(); err != nil {
			return nil, err
		}
		o.add(nil, nfproto(unix.NFPROTO_IPV4), daddr4(), lookup(dns4), logExpr(ruleset.PrefixAllowed), &expr.Counter{}, verdict(expr.VerdictAccept))
		o.add(nil, nfproto(unix.NFPROTO_IPV6), daddr6(), lookup(dns6), logExpr(ruleset.PrefixAllowed), &expr.Counter{}, verdict(expr.VerdictAccept))
		if s.Interactive {
			// ruleset.QueueMatches, as nft 1.0.x emits them.
			p.queued = true
			o.add(nil, l4proto(unix.IPPROTO_TCP), payload(expr.PayloadBaseTransportHeader, 13, 1),
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpFIN | tcpSYN | tcpRST | tcpACK}, Xor: []byte{0}},
				cmpEq([]byte{tcpSYN}), logExpr(ruleset.PrefixQueued), &expr.Counter{}, queueRef{})
			o.add(nil, l4proto(unix.IPPROTO_UDP), logExpr(ruleset.PrefixQueued), &expr.Counter{}, queueRef{})
			o.add(nil, nfproto(unix.NFPROTO_IPV4), l4proto(unix.IPPROTO_ICMP), payload(expr.PayloadBaseTransportHeader, 0, 1),
				cmpEq([]byte{icmpEchoRequest}), logExpr(ruleset.PrefixQueued), &expr.Counter{}, queueRef{})
			o.add(nil, nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6), payload(expr.PayloadBaseTransportHeader, 0, 1),
				cmpEq([]byte{icmp6EchoRequest}), logExpr(ruleset.PrefixQueued), &expr.Counter{}, queueRef{})
		}
		switch {
		case s.Learn:
			o.add(nil, logExpr(ruleset.PrefixLearned), &expr.Counter{}, verdict(expr.VerdictAccept))
		default:
			o.add(nil, logExpr(ruleset.PrefixDenied), &expr.Counter{})
			o.add(nil, reject())
		}
	}

	in := &p.input
	in.add(nil, meta(expr.MetaKeyIIFNAME, ifname("lo")), verdict(expr.VerdictAccept))
	in.add(nil, ctState(ctEstablished|ctRelated), verdict(expr.VerdictAccept))
	raTypes := icmp6Set(p.table, 134, 135, 136)
	in.add([]*planSet{raTypes}, nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6),
		payload(expr.PayloadBaseTransportHeader, 0, 1), lookupAnon(raTypes),
		payload(expr.PayloadBaseNetworkHeader, 7, 1), cmpEq([]byte{255}), verdict(expr.VerdictAccept))
	in.add(nil, verdict(expr.VerdictDrop))
	return p, nil
}

func dedupPorts(ports []int) []uint16 {
	seen := map[int]bool{}
	var out []uint16
	for _, p := range ports {
		if !seen[p] && p > 0 && p < 65536 {
			seen[p] = true
			out = append(out, uint16(p))
		}
	}
	return out
}

func (c *chainPlan) add(anon []*planSet, e ...any) {
	c.rules = append(c.rules, e)
	c.anon = append(c.anon, anon)
}

func (c *chainPlan) specialRejects() error {
	for _, r := range append(ruleset.SpecialV4(), ruleset.SpecialV6()...) {
		m, err := prefixMatch(r)
		if err != nil {
			return err
		}
		c.add(nil, append(m, logExpr(ruleset.PrefixPrivate), reject())...)
	}
	return nil
}

// add appends the interval (or single) elements for one canonical address
// or CIDR. Interval sets hold [start, end) pairs, the end flagged; a range
// reaching the top of the address space has no end element (as nft does).
func (ps *planSet) add(a string) error {
	pfx, err := parsePrefix(a)
	if err != nil {
		return err
	}
	ps.elems = append(ps.elems, nftables.SetElement{Key: pfx.Addr().AsSlice()})
	if !ps.set.Interval {
		if !pfx.IsSingleIP() {
			return fmt.Errorf("prefix %s in a set without intervals", a)
		}
		return nil
	}
	if end, ok := rangeEnd(pfx); ok {
		ps.elems = append(ps.elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
	}
	return nil
}

func parsePrefix(a string) (netip.Prefix, error) {
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(a)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// rangeEnd is the first address after pfx; ok is false when pfx reaches
// the last address of its family.
func rangeEnd(pfx netip.Prefix) (netip.Addr, bool) {
	b := pfx.Addr().AsSlice()
	bits := pfx.Bits()
	for i := bits; i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			a, _ := netip.AddrFromSlice(b)
			return a, true
		}
	}
	return netip.Addr{}, false
}

// icmp6Set is an anonymous constant set of ICMPv6 types.
func icmp6Set(t *nftables.Table, types ...byte) *planSet {
	ps := &planSet{set: &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeICMP6Type}}
	for _, ty := range types {
		ps.elems = append(ps.elems, nftables.SetElement{Key: []byte{ty}})
	}
	return ps
}

// prefixSet is an anonymous constant interval set of IPv6 prefixes. nft
// starts such a set with an interval end at the zero address.
func prefixSet(t *nftables.Table, prefixes ...string) (*planSet, error) {
	ps := &planSet{set: &nftables.Set{Table: t, Anonymous: true, Constant: true, Interval: true,
		KeyType: nftables.TypeIP6Addr, KeyByteOrder: binaryutil.BigEndian}}
	ps.elems = append(ps.elems, nftables.SetElement{Key: make([]byte, 16), IntervalEnd: true})
	for _, p := range prefixes {
		if err := ps.add(p); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// Expression helpers, each the bytecode nft 1.0.x emits for the construct
// (`nft --debug=netlink`).

func meta(k expr.MetaKey, want []byte) any {
	return &multi{[]any{&expr.Meta{Key: k, Register: 1}, cmpEq(want)}}
}

// markEq is `meta mark M`: the mark is compared in host byte order.
func markEq(m uint32) any {
	return &multi{[]any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, cmpEq(binaryutil.NativeEndian.PutUint32(m))}}
}

func cmpEq(b []byte) any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }

func nfproto(p byte) any {
	return &multi{[]any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq([]byte{p})}}
}

func l4proto(p byte) any {
	return &multi{[]any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{p})}}
}

func payload(base expr.PayloadBase, off, n uint32) any {
	return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
}

func dport(p uint16) any {
	return &multi{[]any{payload(expr.PayloadBaseTransportHeader, 2, 2), cmpEq(binaryutil.BigEndian.PutUint16(p))}}
}

func daddr4() any { return payload(expr.PayloadBaseNetworkHeader, 16, 4) }
func daddr6() any { return payload(expr.PayloadBaseNetworkHeader, 24, 16) }

func daddrEq(a netip.Addr) any {
	if a.Is4() {
		return &multi{[]any{nfproto(unix.NFPROTO_IPV4), daddr4(), cmpEq(a.AsSlice())}}
	}
	return &multi{[]any{nfproto(unix.NFPROTO_IPV6), daddr6(), cmpEq(a.AsSlice())}}
}

// prefixMatch is `ip daddr P` / `ip6 daddr P` as nft 1.0.x emits it: a
// byte-aligned prefix loads only the bytes it covers; any other loads the
// whole address and masks it.
func prefixMatch(s string) ([]any, error) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return nil, err
	}
	pfx = pfx.Masked()
	addr := pfx.Addr().AsSlice()
	bits := pfx.Bits()
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if !pfx.Addr().Is4() {
		proto, off = unix.NFPROTO_IPV6, 24
	}
	if bits%8 == 0 {
		n := bits / 8
		return []any{nfproto(proto), payload(expr.PayloadBaseNetworkHeader, off, uint32(n)), cmpEq(addr[:n])}, nil
	}
	n := len(addr)
	return []any{nfproto(proto), payload(expr.PayloadBaseNetworkHeader, off, uint32(n)),
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask(bits, n), Xor: make([]byte, n)},
		cmpEq(addr)}, nil
}

func mask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

const (
	ctEstablished = 1 << 1
	ctRelated     = 1 << 2
	ctNew         = 1 << 3
)

func ctState(bits uint32) any {
	return &multi{[]any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}}
}

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func lookup(ps *planSet) any {
	return &expr.Lookup{SourceRegister: 1, SetName: ps.set.Name}
}

// lookupAnon refers to an anonymous set by the ID AddSet assigns; it is
// filled in when the batch is built (see Plan.Apply).
func lookupAnon(ps *planSet) any { return &anonRef{ps: ps} }

func logExpr(prefix string) any {
	return &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: ruleset.NFLogGroup, Data: []byte(prefix + ": ")}
}

func reject() any {
	return &expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}
}

// rejectTCPReset is `reject with tcp reset` (NFT_REJECT_TCP_RST, code 0).
func rejectTCPReset() any { return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST} }

func verdict(k expr.VerdictKind) any { return &expr.Verdict{Kind: k} }

const (
	tcpFIN           = 0x01
	tcpSYN           = 0x02
	tcpRST           = 0x04
	tcpACK           = 0x10
	icmpEchoRequest  = 8
	icmp6EchoRequest = 128
)

// queueRef is ruleset.QueueStmt, filled in with the plan's QueueForm
// when the rule is flattened.
type queueRef struct{}

// queueExpr is the verdict queueRef stands for: queue ruleset.NFQueueNum,
// one queue, no flags. Without NFT_QUEUE_FLAG_BYPASS (native) or
// NFQ_FLAG_BYPASS (xt) the kernel drops a packet nobody holds the queue
// for; without fanout every packet goes to that one queue.
func queueExpr(f QueueForm) expr.Any {
	if f == QueueCompat {
		return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: nfqInfoV3(ruleset.NFQueueNum)}
	}
	return &expr.Queue{Num: ruleset.NFQueueNum, Total: 1}
}

// nfqInfoV3 is struct xt_NFQ_info_v3 {u16 queuenum, queues_total, flags}
// in host byte order, padded to XT_ALIGN (8 bytes) as nft_compat checks:
// queues_total 1 (the target refuses 0), flags 0 (no bypass, no fanout).
func nfqInfoV3(num uint16) *xt.Unknown {
	info := make([]byte, 8)
	copy(info[0:2], binaryutil.NativeEndian.PutUint16(num))
	copy(info[2:4], binaryutil.NativeEndian.PutUint16(1))
	u := xt.Unknown(info)
	return &u
}

// multi and anonRef are placeholders flattened by exprs: multi groups the
// expressions of one selector, anonRef becomes a Lookup once the anonymous
// set has its batch-local ID.
type multi struct{ e []any }

type anonRef struct{ ps *planSet }

// flatten expands the placeholders into the rule's expressions, a queue
// verdict in form q.
func flatten(in []any, q QueueForm) []expr.Any {
	var out []expr.Any
	for _, e := range in {
		switch v := e.(type) {
		case *multi:
			out = append(out, flatten(v.e, q)...)
		case queueRef:
			out = append(out, queueExpr(q))
		case *anonRef:
			out = append(out, &expr.Lookup{SourceRegister: 1, SetID: v.ps.set.ID, SetName: v.ps.set.Name})
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}
