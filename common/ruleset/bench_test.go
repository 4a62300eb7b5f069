package ruleset

import (
	"fmt"
	"testing"
)

// benchScript is the hook-mode script of a 1,000-entry allowlist with the
// slirp4netns gateways and three service ports, as pre-start writes it.
func benchScript(b *testing.B) string {
	b.Helper()
	var allow []string
	for i := 0; i < 1000; i++ {
		allow = append(allow, fmt.Sprintf("198.51.%d.%d", 100+i/250, i%250+1))
	}
	text, _, err := Script{Options: Options{DNS: SlirpDNS, LoopbackPorts: []int{9418, 18731, 18732}}, Allow: allow, Gateways: SlirpGateways()}.Render()
	if err != nil {
		b.Fatal(err)
	}
	return text
}

// BenchmarkVerifyHookText is the check the hook runs on ruleset.nft before
// applying it over netlink.
func BenchmarkVerifyHookText(b *testing.B) {
	text := benchScript(b)
	if errs := VerifyHook(text, false); len(errs) > 0 {
		b.Fatal(errs)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = VerifyHook(text, false)
	}
}

// BenchmarkParseScript is the strict parse (render and compare included)
// the hook runs before building its netlink plan.
func BenchmarkParseScript(b *testing.B) {
	text := benchScript(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := ParseScript(text); !ok {
			b.Fatal("not parsed")
		}
	}
}
