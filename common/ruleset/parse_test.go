package ruleset

import (
	"fmt"
	"strings"
	"testing"
)

// parseCases are Scripts covering every option the generator has: both
// modes, pasta (host loopback) and slirp4netns, interactive, IPv4 and IPv6
// forwarders, ports, learned elements, and element lists with single
// addresses, CIDRs, adjacent ranges and both families.
func parseCases() map[string]Script {
	ports := []int{9418, 18731, 18732}
	allow := []string{"198.51.100.7", "203.0.113.0/25", "203.0.113.128/25", "2001:db8::1", "2001:db8:1::/48", "10.9.0.0/16"}
	learned := []string{"203.0.113.200", "198.51.100.44", "2001:db8:7::1"}
	deny := []string{"198.51.100.9", "2001:db8::dead"}
	gws := SlirpGateways()
	slirp := Options{DNS: SlirpDNS, LoopbackPorts: ports}
	pasta := Options{DNS: PastaDNS, LoopbackPorts: ports, HostLoopback: PastaHostLoopback}
	cases := map[string]Script{
		"hook bare":              {Options: Options{DNS: SlirpDNS}},
		"hook slirp":             {Options: slirp, Allow: allow, Learned: learned, Deny: deny, Gateways: gws},
		"hook slirp no elements": {Options: slirp, Gateways: gws},
		"hook pasta":             {Options: pasta, Allow: allow, Learned: learned, Deny: deny},
		"hook pasta learned v6":  {Options: pasta, Learned: learned[2:]},
		"hook interactive v6":    {Options: Options{DNS: "2001:db8::53", Interactive: true}, Allow: allow, Learned: learned},
		"hook learn slirp":       {Options: Options{DNS: SlirpDNS, Learn: true, LoopbackPorts: []int{9418}}, Allow: allow, Learned: learned, Gateways: SlirpGateways()},
		"hook v6 fwd ports":      {Options: Options{DNS: "2001:db8::53", LoopbackPorts: ports}, Learned: learned, Gateways: gws},
		"hook replace":           {Options: Options{DNS: SlirpDNS}, Allow: allow, ReplaceExisting: true},
		"bypass":                 {Options: slirp, Bypass: true, Allow: allow, Learned: learned, Gateways: gws},
		"bypass pasta":           {Options: pasta, Bypass: true, Allow: allow},
		"bypass all":             {Options: Options{DNS: SlirpDNS}, Bypass: true, AllowAll: true, Gateways: gws},
		"bypass all v6 fwd":      {Options: Options{DNS: "2001:db8::53", LoopbackPorts: ports}, Bypass: true, AllowAll: true, Learned: learned},
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
			wantLo := s.HostLoopback
			if len(s.LoopbackPorts) == 0 {
				wantLo = "" // nothing rendered, nothing to recover
			}
			if got.Bypass != s.Bypass || got.AllowAll != s.AllowAll || got.Interactive != s.Interactive || got.Learn != s.Learn || got.DNS != s.DNS ||
				got.HostLoopback != wantLo || len(got.Allow) != len(s.Allow) || len(got.Learned) != len(s.Learned) || len(got.Deny) != len(s.Deny)*boolInt(!s.Bypass) {
				t.Fatalf("fields differ: %+v vs %+v", got, s)
			}
		})
	}
}

// Anything the generator would not write is refused, so that the hook
// hands it to nft instead of guessing its meaning.
func TestParseScriptRefusesForeignText(t *testing.T) {
	s := parseCases()["hook slirp"]
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
		"non-canonical ip":  func(x string) string { return strings.Replace(x, "{ 198.51.100.7,", "{ 198.051.100.7,", 1) },
		"old timeout": func(x string) string {
			return strings.Replace(x, "{ 198.51.100.7,", "{ 198.51.100.7 timeout 3650d,", 1)
		},
		"learned timeout": func(x string) string { return strings.Replace(x, "203.0.113.200,", "203.0.113.200 timeout 5m,", 1) },
		"learned special": func(x string) string { return strings.Replace(x, "203.0.113.200,", "127.0.0.1, 203.0.113.200,", 1) },
		"learned cidr":    func(x string) string { return strings.Replace(x, "203.0.113.200,", "203.0.113.0/24,", 1) },
		"unmarked dns":    func(x string) string { return strings.ReplaceAll(x, "meta mark 0x7e5d0053 ", "") },
		"no fwd reject": func(x string) string {
			return strings.Replace(x, "        ip daddr 10.0.2.3 log", "        ip daddr 10.0.2.4 log", 1)
		},
		"no built-in forwarder reject (the table before finding 6)": func(x string) string {
			return strings.Replace(x, "        ip6 daddr fd00::3 log group 100 prefix \"TEROK_SHIELD_PRIVATE: \" reject with icmpx admin-prohibited\n", "", 1)
		},
		"built-in forwarder reject after conntrack": func(x string) string {
			line := "        ip daddr 169.254.1.1 log group 100 prefix \"TEROK_SHIELD_PRIVATE: \" reject with icmpx admin-prohibited\n"
			return strings.Replace(strings.Replace(x, line, "", 1), "        ct state established,related accept\n", "        ct state established,related accept\n"+line, 1)
		},
		"host loopback slirp": func(x string) string {
			return strings.Replace(x, "        ip daddr @deny_v4", "        tcp dport 9418 ip daddr 169.254.1.2 accept\n        ip daddr @deny_v4", 1)
		},
		"learned before specials": func(x string) string {
			return strings.Replace(x, "        ip daddr 0.0.0.0/8", "        ip daddr @dns_v4 log group 100 prefix \"TEROK_SHIELD_ALLOWED: \" counter accept\n        ip daddr 0.0.0.0/8", 1)
		},
		"other table":  func(x string) string { return strings.ReplaceAll(x, "terok_shield", "other") },
		"dns 0":        func(x string) string { return strings.ReplaceAll(x, "10.0.2.3", "0.0.0.0/0") },
		"second table": func(x string) string { return x + "table ip other {\n}\n" },
		"swapped elements": func(x string) string {
			i := strings.Index(x, "add element")
			return x[:i] + strings.Join(reverseLines(x[i:]), "")
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			if edit(text) == text {
				t.Fatal("the edit did not apply")
			}
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

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
