package shieldbundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
)

func FuzzLineFiles(f *testing.F) {
	f.Add("198.51.100.1\n2001:db8::/32\n# x\n1.2.3.4; flush ruleset\n", "github.com\n*.x.org\n$(id).com\n")
	f.Fuzz(func(t *testing.T, ips, domains string) {
		dir := t.TempDir()
		_ = os.WriteFile(filepath.Join(dir, FileProfileAllowed), []byte(ips), 0o600)
		_ = os.WriteFile(filepath.Join(dir, FileProfileDomains), []byte(domains), 0o600)
		got, err := EffectiveAllowlist(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range got {
			if c, err := ruleset.CanonicalIP(ip); err != nil || c != ip {
				t.Fatalf("non-canonical %q", ip)
			}
		}
		ds, err := EffectiveDomains(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		conf, err := DnsmasqConf("10.0.2.3", "/state/c", ds, 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(conf), "\n"), "\n")[10:] {
			if !strings.HasPrefix(line, "nftset=/") || strings.Count(line, "/") != 2 || strings.ContainsAny(line, " \t\r") {
				t.Fatalf("unsafe nftset line %q", line)
			}
		}
	})
}
