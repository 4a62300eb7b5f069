package ruleset

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// A state bundle of version 4, as terok-shield 0.6.5 wrote it, still starts
// under the hook (docs/shield-hook.md, "Bundles of terok-shield 0.6.5"). Its
// ruleset.nft differs from ours in three ways that matter: the allow-set
// rules come before the deny-set rules, the input chain accepts every
// packet with source port 53 (`udp sport 53 accept`, `tcp sport 53
// accept`), and DNS to the forwarder is accepted without the resolver's
// mark (there is no closed DNS in that layout). NormalizeLegacy repairs
// the first two before the table is applied; VerifyLegacy then checks what
// the applied table allows.

// LegacySpecialV4 and LegacySpecialV6 are the private ranges the 0.6.5
// table rejects (its spec's six).
var (
	LegacySpecialV4 = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
	LegacySpecialV6 = []string{"fc00::/7", "fe80::/10"}
)

var legacyRes = sync.OnceValue(func() (r struct {
	sport53, denyRule, allowRule, dnsAccept *regexp.Regexp
	accepts                                 []*regexp.Regexp
}) {
	r.sport53 = regexp.MustCompile(`^(udp|tcp) sport 53 accept$`)
	r.denyRule = regexp.MustCompile(`^(ip|ip6) daddr @deny_v[46] `)
	r.allowRule = regexp.MustCompile(`^(ip|ip6) daddr @allow_v[46] `)
	r.dnsAccept = regexp.MustCompile(`^(?:meta mark 0x[0-9a-f]{8} )?(udp|tcp) dport 53 (ip|ip6) daddr (` + addrPat + `) accept$`)
	r.accepts = []*regexp.Regexp{
		regexp.MustCompile(`^oifname "lo" accept$`),
		regexp.MustCompile(`^ct state established,related accept$`),
		r.dnsAccept,
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[0])) + `$`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[1])) + `$`),
		regexp.MustCompile(`^tcp dport [0-9]{1,5} (ip daddr @gateway_v4|ip6 daddr @gateway_v6|ip daddr ` + regexp.QuoteMeta(PastaHostLoopback) + `) accept$`),
		regexp.MustCompile(`^ip daddr @` + SetAllowV4 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
		regexp.MustCompile(`^ip6 daddr @` + SetAllowV6 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
	}
	return r
})

// NormalizeLegacy rewrites a 0.6.5 ruleset.nft before it is applied: the
// input chain's source-port-53 accept rules are removed (anyone can send
// from port 53; replies are conntrack's job), and the output chain's
// deny-set rules are moved right before its first allow-set rule, so a
// denied address stays refused even when the allow sets hold it (0.6.5's
// dnsmasq adds every answer of a listed domain to them). For every table
// the order of the deny and allow rules does not change what it allows
// unless the sets overlap, and then the deny must win. Everything else is
// kept byte for byte. changes says what was done, for the operator.
func NormalizeLegacy(script string) (out string, changes []string) {
	lines := strings.Split(script, "\n")
	kept := make([]string, 0, len(lines))
	inChain := ""
	depth := 0
	var denyLines []string
	firstAllow := -1
	moved := false
	for _, raw := range lines {
		l := collapseSpace(raw)
		before := depth
		depth += strings.Count(l, "{") - strings.Count(l, "}")
		if before == 1 {
			if name, ok := chainName(l); ok {
				inChain = name
			}
		}
		if before == 2 && depth == 2 {
			switch {
			case inChain == "input" && legacyRes().sport53.MatchString(l):
				changes = append(changes, fmt.Sprintf("removed the input rule %q: it accepts any packet sent from source port 53", l))
				continue
			case inChain == "output" && legacyRes().allowRule.MatchString(l) && firstAllow < 0:
				firstAllow = len(kept)
			case inChain == "output" && legacyRes().denyRule.MatchString(l) && firstAllow >= 0:
				denyLines = append(denyLines, raw)
				moved = true
				continue
			}
		}
		kept = append(kept, raw)
	}
	if moved {
		kept = slices.Insert(kept, firstAllow, denyLines...)
		changes = append(changes, "moved the deny-set rules before the allow-set rules: a denied address must stay refused even when an allow set holds it")
	}
	return strings.Join(kept, "\n"), changes
}

// VerifyLegacy checks a listing of an applied 0.6.5 table (after
// NormalizeLegacy) for what it allows rather than for our generator's
// exact order: both chains drop-policy base chains; the input chain only
// loopback, conntrack, ND and drop; in the output chain no accept rule but
// the kinds 0.6.5 writes (loopback, conntrack, DNS to one forwarder, ND,
// the host-service ports, the allow sets), every deny-set rule before
// every allow-set rule, a reject of each private range, and the terminal
// reject last; no other chain, jump or queue. An empty result means the
// table enforces what its bundle lists.
func VerifyLegacy(listing string) []string {
	t := parse(listing)
	var errs []string
	out, in := t.chains["output"], t.chains["input"]
	if out == nil || in == nil {
		return []string{"output or input chain missing"}
	}
	if hookOK, policyOK := out.hasHeader("output", "drop"); !hookOK || !policyOK {
		errs = append(errs, "output chain is not a drop-policy output hook")
	}
	if hookOK, policyOK := in.hasHeader("input", "drop"); !hookOK || !policyOK {
		errs = append(errs, "input chain is not a drop-policy input hook")
	}
	for _, r := range in.rules {
		if !slices.Contains(inputRules, r) {
			errs = append(errs, fmt.Sprintf("input chain rule %q accepts what replies and loopback do not need", r))
		}
	}
	if n := len(in.rules); n == 0 || in.rules[n-1] != "drop" {
		errs = append(errs, "input chain does not end in drop")
	}
	dnsTo := ""
	lastDeny, firstAllow := -1, -1
	for i, r := range out.rules {
		if strings.Contains(r, "accept") && !matchesAny(r, legacyRes().accepts) {
			errs = append(errs, fmt.Sprintf("unexpected accept rule: %s", r))
		}
		if m := legacyRes().dnsAccept.FindStringSubmatch(r); m != nil {
			if dnsTo != "" && dnsTo != m[3] {
				errs = append(errs, fmt.Sprintf("DNS accepted to two addresses: %s and %s", dnsTo, m[3]))
			}
			dnsTo = m[3]
		}
		if legacyRes().denyRule.MatchString(r) && strings.HasSuffix(r, RejectStmt) {
			lastDeny = i
		}
		if legacyRes().allowRule.MatchString(r) && firstAllow < 0 {
			firstAllow = i
		}
	}
	if lastDeny < 0 || firstAllow < 0 {
		errs = append(errs, "deny-set or allow-set rules missing")
	} else if lastDeny > firstAllow {
		errs = append(errs, "an allow-set rule precedes a deny-set rule: a denied address in an allow set would be accepted")
	}
	found := map[netip.Prefix]bool{}
	for _, r := range out.rules {
		if m := verifyRes().reject.FindStringSubmatch(r); m != nil {
			if p, err := netip.ParsePrefix(m[2]); err == nil {
				found[p.Masked()] = true
			}
		}
	}
	for _, s := range append(append([]string{}, LegacySpecialV4...), LegacySpecialV6...) {
		if !found[netip.MustParsePrefix(s)] {
			errs = append(errs, fmt.Sprintf("Private-range reject rule for %s missing", s))
		}
	}
	if n := len(out.rules); n == 0 || out.rules[n-1] != RejectStmt {
		errs = append(errs, "terminal reject is not the last output rule")
	}
	return checkJumps(t, errs, nil)
}

func matchesAny(r string, res []*regexp.Regexp) bool {
	for _, re := range res {
		if re.MatchString(r) {
			return true
		}
	}
	return false
}
