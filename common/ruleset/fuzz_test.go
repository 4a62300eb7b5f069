package ruleset

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// Only these characters may reach an nft script from an element list.
var safeElementRe = regexp.MustCompile(`^(add|delete) element inet terok_shield (allow|dns|deny|gateway)_v[46] \{ [0-9a-f:./, ]+\}$`)

func FuzzCanonicalIP(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "198.51.100.0/24", "2001:db8::1", "::ffff:1.2.3.4", "1.2.3.4; flush ruleset", "fe80::1%lo", " 10.0.0.1 ", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := CanonicalIP(s)
		if err != nil {
			if c != "" {
				t.Fatalf("value with error: %q", c)
			}
			return
		}
		if strings.ContainsAny(c, " ;{}\"'\n\t%") {
			t.Fatalf("unsafe canonical form %q of %q", c, s)
		}
		// Canonical is a fixed point and parses back.
		if c2, err := CanonicalIP(c); err != nil || c2 != c {
			t.Fatalf("not idempotent: %q -> %q (%v)", c, c2, err)
		}
		if strings.Contains(c, "/") {
			if _, err := netip.ParsePrefix(c); err != nil {
				t.Fatal(err)
			}
		} else if _, err := netip.ParseAddr(c); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzValidDomain(f *testing.F) {
	for _, s := range []string{"github.com", "*.example.org", "com", "a;b.com", "1.2.3.4", "EXAMPLE.COM "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := ValidDomain(s)
		if !ok {
			return
		}
		if strings.ContainsAny(d, " ;{}\"'\n\t/#,$`\\") || d != strings.ToLower(d) {
			t.Fatalf("unsafe domain %q from %q", d, s)
		}
		if IsIP(d) {
			t.Fatalf("IP literal accepted as domain: %q", d)
		}
	})
}

func FuzzElements(f *testing.F) {
	f.Add("192.0.2.1\n198.51.100.0/24\n2001:db8::1", true)
	f.Add("1.2.3.4; flush ruleset\n}", false)
	f.Add("127.0.0.1\n::ffff:10.0.2.2\n169.254.169.254\n198.51.100.1\n64:ff9b::7f00:1", false)
	f.Fuzz(func(t *testing.T, list string, permanent bool) {
		addrs := strings.Split(list, "\n")
		for _, kind := range []string{KindAllow, KindDeny, KindGateway, KindDNS} {
			out, _ := Elements("add", kind, addrs, permanent)
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if line != "" && !safeElementRe.MatchString(line) {
					t.Fatalf("unsafe element line %q", line)
				}
			}
			if kind != KindDNS {
				continue
			}
			// A learned address never lands in a dns set when special.
			for _, e := range elementsOf(out) {
				if a, err := netip.ParseAddr(e); err != nil || IsSpecial(a) {
					t.Fatalf("special or non-address learned element %q", e)
				}
			}
		}
	})
}

func FuzzVerify(f *testing.F) {
	good, _ := Hook(Options{DNS: PastaDNS, LoopbackPorts: []int{1}, HostLoopback: PastaHostLoopback})
	by, _ := Bypass(Options{DNS: PastaDNS}, true)
	by6, _ := Bypass(Options{DNS: "2001:db8::53", LoopbackPorts: []int{1}}, false)
	inter, _ := Hook(Options{DNS: SlirpDNS, LoopbackPorts: []int{1}, Interactive: true})
	f.Add(good)
	f.Add(by)
	f.Add(by6)
	f.Add(inter)
	f.Add(strings.ReplaceAll(inter, QueueStmt, "queue flags bypass to 100"))
	f.Add("table inet terok_shield {\n chain output {\n}}}}{{")
	f.Fuzz(func(t *testing.T, listing string) {
		_ = VerifyHook(listing, false)
		_ = VerifyHook(listing, true)
		_ = VerifyBypass(listing, true)
		switch Classify(listing) {
		case StateInactive, StateUp, StateLearn, StateQuarantine, StateDown, StateDownAll, StateError:
		default:
			t.Fatal("unknown state")
		}
	})
}

// FuzzParseScript: ruleset.nft is read by the hook with root rights, and a
// parsed Script is applied without nft. Whatever the input, parsing never
// panics, and a Script is returned only when it renders back to the input
// and every value in it passed validation.
func FuzzParseScript(f *testing.F) {
	for _, s := range parseCases() {
		if text, _, err := s.Render(); err == nil {
			f.Add(text)
		}
	}
	f.Add("table inet terok_shield {\n}\n")
	f.Fuzz(func(t *testing.T, text string) {
		s, ok := ParseScript(text)
		if !ok {
			return
		}
		out, skipped, err := s.Render()
		if err != nil || len(skipped) > 0 || out != text {
			t.Fatalf("accepted a script that does not render back: %v %v", err, skipped)
		}
		for _, a := range append(append(append(append([]string{s.DNS}, s.Allow...), s.Learned...), s.Deny...), s.Gateways...) {
			if c, err := CanonicalIP(a); err != nil || c != a {
				t.Fatalf("unvalidated value %q", a)
			}
		}
		for _, a := range s.Learned {
			if ip, err := netip.ParseAddr(a); err != nil || IsSpecial(ip) {
				t.Fatalf("special or prefix learned element %q accepted", a)
			}
		}
		if s.HostLoopback != "" && s.HostLoopback != PastaHostLoopback {
			t.Fatalf("host loopback %q", s.HostLoopback)
		}
	})
}

// elementsOf lists the elements of rendered element lines.
func elementsOf(out string) []string {
	var elems []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if i, j := strings.Index(line, "{ "), strings.LastIndex(line, " }"); i >= 0 && j > i {
			elems = append(elems, strings.Split(line[i+2:j], ", ")...)
		}
	}
	return elems
}

// FuzzCollapseSpace: the hand-written white-space collapse of normRule
// equals the regular-expression form it replaced (trim, then \s+ -> " ").
func FuzzCollapseSpace(f *testing.F) {
	for _, s := range []string{"  ip daddr\t@allow_v4  accept ", "\v a \u00a0 b\r\n", "", "log prefix \"X: \" group 100"} {
		f.Add(s)
	}
	re := regexp.MustCompile(`\s+`)
	f.Fuzz(func(t *testing.T, s string) {
		want := re.ReplaceAllString(strings.Trim(s, " \t\n\f\r"), " ")
		if got := collapseSpace(s); got != want {
			t.Fatalf("collapseSpace(%q) = %q, want %q", s, got, want)
		}
	})
}

// FuzzVerifyMatchers: the string checks that replaced VerifyHook's
// regular expressions (tableHeader, chainName, squeezeSpace, hasDport53,
// isServicePortAccept, the exact hookAccept rules) accept exactly what
// those expressions matched, on the generator's own rules and on anything
// else.
func FuzzVerifyMatchers(f *testing.F) {
	for _, o := range []Options{
		{DNS: SlirpDNS, LoopbackPorts: []int{9418, 18731}},
		{DNS: "10.0.2.3", LoopbackPorts: []int{1}, HostLoopback: PastaHostLoopback},
		{DNS: "fd00::3", Interactive: true},
	} {
		text, _, err := Script{Options: o, Gateways: SlirpGateways()}.Render()
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range strings.Split(text, "\n") {
			f.Add(strings.TrimSpace(l))
		}
	}
	for _, s := range []string{"chain  {", "chain {", "chain a b {", "chain a.b-c_1 {", "chain a {x", "tcp dport 123456 ip daddr @gateway_v4 accept",
		"tcp dport  ip daddr @gateway_v4 accept", "tcp dport 0 ip daddr 169.254.1.2 accept", "udp dport 53", "udp dport 530 accept", "dport 53 accept",
		"type filter\thook output  priority 0;", "\v a \u00a0 b\r\n", "table inet terok_shield {", "table inet terok_shield { "} {
		f.Add(s)
	}
	markPat := `meta mark 0x` + fmt.Sprintf("%08x", ResolverMark)
	marked := regexp.MustCompile(`^` + markPat + ` (udp|tcp) dport 53 (ip|ip6) daddr (` + addrPat + `) accept$`)
	oldAccept := []*regexp.Regexp{
		regexp.MustCompile(`^oifname "lo" accept$`),
		marked,
		regexp.MustCompile(`^ct state established,related accept$`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[0])) + `$`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[1])) + `$`),
		regexp.MustCompile(`^tcp dport [0-9]{1,5} (ip daddr @gateway_v4|ip6 daddr @gateway_v6|ip daddr ` + regexp.QuoteMeta(PastaHostLoopback) + `) accept$`),
		regexp.MustCompile(`^ip daddr @` + SetAllowV4 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
		regexp.MustCompile(`^ip6 daddr @` + SetAllowV6 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
		regexp.MustCompile(`^ip daddr @` + SetDNSV4 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
		regexp.MustCompile(`^ip6 daddr @` + SetDNSV6 + ` ` + logPat(PrefixAllowed) + ` counter accept$`),
	}
	table := regexp.MustCompile(`^table inet terok_shield \{$`)
	chainRe := regexp.MustCompile(`^chain ([A-Za-z0-9_.-]+) \{$`)
	space := regexp.MustCompile(`\s+`)
	dport53 := regexp.MustCompile(`dport 53( |$)`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := s == tableHeader, table.MatchString(s); got != want {
			t.Fatalf("table header %q: %v, want %v", s, got, want)
		}
		name, ok := chainName(s)
		if m := chainRe.FindStringSubmatch(s); (m != nil) != ok || (ok && m[1] != name) {
			t.Fatalf("chainName(%q) = %q %v, want %v", s, name, ok, m)
		}
		if got, want := squeezeSpace(s), space.ReplaceAllString(s, " "); got != want {
			t.Fatalf("squeezeSpace(%q) = %q, want %q", s, got, want)
		}
		if got, want := hasDport53(s), dport53.MatchString(s); got != want {
			t.Fatalf("hasDport53(%q) = %v, want %v", s, got, want)
		}
		rules := verifyRes().hookAccept
		if len(rules) != len(oldAccept) {
			t.Fatalf("%d accept rules, want %d", len(rules), len(oldAccept))
		}
		for i, a := range rules {
			if got, want := a.accepts(s), oldAccept[i].MatchString(s); got != want {
				t.Fatalf("accept rule %d on %q: %v, want %v", i, s, got, want)
			}
		}
	})
}
