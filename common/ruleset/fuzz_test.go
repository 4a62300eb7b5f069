package ruleset

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// Only these characters may reach an nft script from an element list.
var safeElementRe = regexp.MustCompile(`^(add|delete) element inet terok_shield (allow|deny|gateway)_v[46] \{ [0-9a-f:./, ]+( timeout 3650d[0-9a-f:./, ]*)*\}$`)

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
	f.Fuzz(func(t *testing.T, list string, permanent bool) {
		addrs := strings.Split(list, "\n")
		for _, kind := range []string{KindAllow, KindDeny, KindGateway} {
			out, _ := Elements("add", kind, addrs, permanent)
			for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
				if line != "" && !safeElementRe.MatchString(line) {
					t.Fatalf("unsafe element line %q", line)
				}
			}
		}
	})
}

func FuzzVerify(f *testing.F) {
	good, _ := Hook(Options{DNS: PastaDNS, LoopbackPorts: []int{1}})
	by, _ := Bypass(Options{DNS: PastaDNS}, true)
	f.Add(good)
	f.Add(by)
	f.Add("table inet terok_shield {\n chain output {\n}}}}{{")
	f.Fuzz(func(t *testing.T, listing string) {
		_ = VerifyHook(listing, false)
		_ = VerifyBypass(listing, true)
		switch Classify(listing) {
		case StateInactive, StateUp, StateDown, StateDownAll, StateError:
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
		for _, a := range append(append(append([]string{s.DNS}, s.Allow...), s.Deny...), s.Gateways...) {
			if c, err := CanonicalIP(a); err != nil || c != a {
				t.Fatalf("unvalidated value %q", a)
			}
		}
	})
}
