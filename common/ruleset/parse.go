package ruleset

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// ParseScript recovers the Script whose Render output is exactly text, for
// consumers that apply a ruleset without nft (the hook builds a netlink
// batch from the result). It accepts only what this package generates:
// the hook or bypass table, optionally preceded by the `delete table` of a replacement
// and followed by `add element` lines. It is strict by construction: the
// values it extracts are rendered again and the result must equal text byte
// for byte, so a Script is returned only when its meaning is the meaning of
// text. Anything else (hand edits, another generator, a newer grammar)
// yields ok == false, and the caller falls back to `nft -f`.
func ParseScript(text string) (s Script, ok bool) {
	rest := text
	if del := "delete table " + Family + " " + Table + "\n"; strings.HasPrefix(rest, del) {
		s.ReplaceExisting = true
		rest = rest[len(del):]
	}
	// The table block ends at the first line that is exactly "}" (the
	// generator indents everything inside it).
	end := strings.Index(rest, "\n}\n")
	if end < 0 {
		return Script{}, false
	}
	table, elems := rest[:end+3], rest[end+3:]

	s.Bypass = strings.Contains(table, "; policy accept;")
	s.Interactive = !s.Bypass && strings.Contains(table, PrefixQueued)
	s.Learn = !s.Bypass && strings.Contains(table, PrefixLearned)
	s.AllowAll = s.Bypass && !strings.Contains(table, "\n        ip daddr "+specialV4[0]+" ")
	m := parseRes().dns.FindStringSubmatch(table)
	if m == nil {
		return Script{}, false
	}
	s.DNS = m[1]
	for _, pm := range parseRes().port.FindAllStringSubmatch(table, -1) {
		p, err := strconv.Atoi(pm[1])
		if err != nil {
			return Script{}, false
		}
		s.LoopbackPorts = append(s.LoopbackPorts, p)
	}
	if parseRes().hostLo.MatchString(table) {
		s.HostLoopback = PastaHostLoopback
	}

	seen := map[string]bool{}
	for _, line := range strings.SplitAfter(elems, "\n") {
		if line == "" {
			continue
		}
		set, list, ok := elementLine(line)
		if !ok || seen[set] {
			return Script{}, false
		}
		seen[set] = true
		switch set[:strings.IndexByte(set, '_')] {
		case KindAllow:
			s.Allow = append(s.Allow, list...)
		case KindDNS:
			s.Learned = append(s.Learned, list...)
		case KindDeny:
			s.Deny = append(s.Deny, list...)
		default:
			s.Gateways = append(s.Gateways, list...)
		}
	}
	out, skipped, err := s.Render()
	if err != nil || len(skipped) > 0 || out != text {
		return Script{}, false
	}
	return s, true
}

// elementLine splits `add element inet terok_shield SET { A, B }\n` into
// the set name and its elements. It only cuts the line where the generator
// puts its separators (a regular expression over a 1,000-element line cost
// most of ParseScript's time); whatever it lets through is rendered again
// and compared with the input by ParseScript.
func elementLine(line string) (set string, elems []string, ok bool) {
	rest, ok := strings.CutPrefix(line, "add element "+Family+" "+Table+" ")
	if !ok {
		return "", nil, false
	}
	set, rest, ok = strings.Cut(rest, " { ")
	if !ok {
		return "", nil, false
	}
	switch set {
	case SetAllowV4, SetAllowV6, SetDNSV4, SetDNSV6, SetDenyV4, SetDenyV6, SetGatewayV4, SetGatewayV6:
	default:
		return "", nil, false
	}
	list, ok := strings.CutSuffix(rest, " }\n")
	if !ok || list == "" || strings.ContainsAny(list, "{}\n") {
		return "", nil, false
	}
	return set, strings.Split(list, ", "), true
}

// parseRes are ParseScript's expressions, compiled on first use (see
// validRes).
var parseRes = sync.OnceValue(func() (r struct{ dns, port, hostLo *regexp.Regexp }) {
	r.dns = regexp.MustCompile(`(?m)^        meta mark 0x` + fmt.Sprintf("%08x", ResolverMark) + ` udp dport 53 ip6? daddr ([0-9a-fA-F.:]+) accept$`)
	r.port = regexp.MustCompile(`(?m)^        tcp dport ([0-9]{1,5}) ip daddr @` + SetGatewayV4 + ` accept$`)
	r.hostLo = regexp.MustCompile(`(?m)^        tcp dport [0-9]{1,5} ip daddr ` + regexp.QuoteMeta(PastaHostLoopback) + ` accept$`)
	return r
})
