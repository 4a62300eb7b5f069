package ruleset

import (
	"fmt"
	"strings"
	"testing"
)

// parseCases are Scripts covering every option the generator has: both
// modes, every tier's set timeout, interactive, IPv4 and IPv6 resolvers,
// ports, and element lists with single addresses, CIDRs, adjacent ranges
// and both families.
func parseCases() map[string]Script {
	ports := []int{9418, 18731, 18732}
	allow := []string{"198.51.100.7", "203.0.113.0/25", "203.0.113.128/25", "2001:db8::1", "2001:db8:1::/48"}
	deny := []string{"198.51.100.9", "2001:db8::dead"}
	gws := SlirpGateways()
	cases := map[string]Script{
		"hook bare":            {Options: Options{DNS: SlirpDNS}},
		"hook slirp dnsmasq":   {Options: Options{DNS: SlirpDNS, LoopbackPorts: ports, SetTimeout: DnsmasqTimeout}, Allow: allow, Permanent: true, Deny: deny, Gateways: gws},
		"hook dnsmasq no elem": {Options: Options{DNS: SlirpDNS, LoopbackPorts: ports, SetTimeout: DnsmasqTimeout}, Gateways: gws},
		"hook dig":             {Options: Options{DNS: PastaDNS, LoopbackPorts: ports}, Allow: allow, Deny: deny},
		"hook interactive":     {Options: Options{DNS: "2001:db8::53", Interactive: true}, Allow: allow},
		"hook replace":         {Options: Options{DNS: SlirpDNS}, Allow: allow, ReplaceExisting: true},
		"bypass":               {Options: Options{DNS: SlirpDNS, LoopbackPorts: ports}, Bypass: true, Allow: allow, Gateways: gws},
		"bypass all":           {Options: Options{DNS: SlirpDNS}, Bypass: true, AllowAll: true, Gateways: gws},
		"bypass timeout":       {Options: Options{DNS: SlirpDNS, SetTimeout: DnsmasqTimeout}, Bypass: true, Allow: allow, Permanent: true},
	}
	var big []string
	for i := 0; i < 1000; i++ {
		big = append(big, fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250+1), fmt.Sprintf("2001:db8:%x::1", i))
	}
	cases["hook 2000"] = Script{Options: Options{DNS: SlirpDNS, LoopbackPorts: ports}, Allow: big, Gateways: gws}
	return cases
}

func TestParseScriptRoundTrip(t *testing.T) {
	for name, s := range parseCases() {
		t.Run(name, func(t *testing.T) {
			text, skipped, err := s.Render()
			if err != nil || len(skipped) > 0 {
				t.Fatal(err, skipped)
			}
			got, ok := ParseScript(text)
			if !ok {
				t.Fatalf("not parsed:\n%s", text)
			}
			again, _, err := got.Render()
			if err != nil || again != text {
				t.Fatalf("parsed script renders differently (%v):\n%s", err, again)
			}
			if got.Bypass != s.Bypass || got.AllowAll != s.AllowAll || got.SetTimeout != s.SetTimeout || len(got.Allow) != len(s.Allow) {
				t.Fatalf("fields differ: %+v vs %+v", got, s)
			}
		})
	}
}

// Anything the generator would not write is refused, so that the hook
// hands it to nft instead of guessing its meaning.
func TestParseScriptRefusesForeignText(t *testing.T) {
	s := parseCases()["hook slirp dnsmasq"]
	text, _, err := s.Render()
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string]func(string) string{
		"empty": func(string) string { return "" },
		"extra rule": func(x string) string {
			return strings.Replace(x, "        oifname \"lo\" accept\n", "        oifname \"lo\" accept\n        ip daddr 198.51.100.1 accept\n", 1)
		},
		"comment":           func(x string) string { return "# hand edited\n" + x },
		"tab indent":        func(x string) string { return strings.Replace(x, "    chain output", "\tchain output", 1) },
		"crlf":              func(x string) string { return strings.ReplaceAll(x, "\n", "\r\n") },
		"no final newline":  func(x string) string { return strings.TrimSuffix(x, "\n") },
		"extra element cmd": func(x string) string { return x + "add element inet terok_shield allow_v4 { 203.0.113.99 }\n" },
		"flush":             func(x string) string { return x + "flush ruleset\n" },
		"policy accept":     func(x string) string { return strings.Replace(x, "policy drop;", "policy accept;", 1) },
		"non-canonical ip":  func(x string) string { return strings.Replace(x, "198.51.100.7 timeout", "198.051.100.7 timeout", 1) },
		"mixed permanent":   func(x string) string { return strings.Replace(x, "198.51.100.7 timeout 3650d", "198.51.100.7", 1) },
		"other table":       func(x string) string { return strings.ReplaceAll(x, "terok_shield", "other") },
		"dns 0":             func(x string) string { return strings.ReplaceAll(x, "10.0.2.3", "0.0.0.0/0") },
		"second table":      func(x string) string { return x + "table ip other {\n}\n" },
		"swapped elements": func(x string) string {
			i := strings.Index(x, "add element")
			return x[:i] + strings.Join(reverseLines(x[i:]), "")
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			if _, ok := ParseScript(edit(text)); ok {
				t.Fatalf("accepted:\n%s", edit(text))
			}
		})
	}
}

func reverseLines(s string) []string {
	l := strings.SplitAfter(strings.TrimSuffix(s, "\n"), "\n")
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	for i := range l {
		if !strings.HasSuffix(l[i], "\n") {
			l[i] += "\n"
		}
	}
	return l
}
