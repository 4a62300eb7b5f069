package ruleset

import (
	"strings"
	"testing"
)

// TestLegacyBundle: the 0.6.5 layout (testdata/shield-0.6.5-dnsmasq.nft,
// written by hand from the documented format, not by our generator) is
// normalised, applied on the real kernel and verified; as written it fails
// VerifyLegacy for the sport-53 hole and the allow-before-deny order, and
// our own checks refuse it.
func TestLegacyBundle(t *testing.T) {
	orig := golden(t, "shield-0.6.5-dnsmasq.nft")
	if errs := VerifyLegacy(orig); !strings.Contains(strings.Join(errs, "; "), `input chain rule "udp sport 53 accept"`) ||
		!strings.Contains(strings.Join(errs, "; "), "an allow-set rule precedes a deny-set rule") {
		t.Fatalf("unnormalised 0.6.5 table: %v", errs)
	}
	if len(VerifyHook(orig, false)) == 0 {
		t.Fatal("VerifyHook accepts the 0.6.5 table")
	}
	fixed, changes := NormalizeLegacy(orig)
	if len(changes) != 3 || !strings.Contains(changes[0], "udp sport 53 accept") || !strings.Contains(changes[2], "moved the deny-set rules") {
		t.Fatalf("changes %q", changes)
	}
	if strings.Contains(fixed, "sport 53") {
		t.Fatalf("sport 53 kept:\n%s", fixed)
	}
	if d, a := strings.Index(fixed, "@deny_v6"), strings.Index(fixed, "daddr @allow_v4"); d < 0 || d > a {
		t.Fatalf("deny rules not before the allow rules:\n%s", fixed)
	}
	if errs := VerifyLegacy(fixed); len(errs) != 0 {
		t.Fatalf("normalised text: %v", errs)
	}
	if again, ch := NormalizeLegacy(fixed); again != fixed || len(ch) != 0 {
		t.Fatalf("normalising twice changed %q", ch)
	}
	ns := newNetns(t)
	if out, err := ns.nft(fixed, "-f", "-"); err != nil {
		t.Fatalf("apply: %v %s", err, out)
	}
	listing, err := ns.nft("", "-t", "list", "table", "inet", "terok_shield")
	if err != nil {
		t.Fatal(listing)
	}
	if errs := VerifyLegacy(listing); len(errs) != 0 {
		t.Fatalf("listing: %v\n%s", errs, listing)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"extra accept", "        oifname \"lo\" accept\n", "        oifname \"lo\" accept\n        ip daddr 0.0.0.0/0 accept\n", "unexpected accept rule"},
		{"second dns address", "tcp dport 53 ip daddr 10.0.2.3 accept", "tcp dport 53 ip daddr 10.0.2.4 accept", "DNS accepted to two addresses"},
		{"private range missing", "        ip daddr 172.16.0.0/12 log group 100 prefix \"TEROK_SHIELD_PRIVATE: \" reject with icmpx admin-prohibited\n", "", "172.16.0.0/12 missing"},
		{"input accepts more", "        iifname \"lo\" accept\n", "        iifname \"lo\" accept\n        udp dport 5353 accept\n", "input chain rule"},
		{"policy accept", "hook output priority filter; policy drop;", "hook output priority filter; policy accept;", "not a drop-policy output hook"},
	} {
		bad := strings.Replace(fixed, tc.old, tc.new, 1)
		if bad == fixed {
			t.Fatalf("%s: replacement did not apply", tc.name)
		}
		if out, err := ns.nft(Replace(true, bad), "-f", "-"); err != nil {
			t.Fatalf("%s: apply: %v %s", tc.name, err, out)
		}
		listing, _ := ns.nft("", "-t", "list", "table", "inet", "terok_shield")
		if errs := VerifyLegacy(listing); !strings.Contains(strings.Join(errs, "; "), tc.want) {
			t.Errorf("%s: %v lacks %q", tc.name, errs, tc.want)
		}
	}
}

// FuzzNormalizeLegacy: any text is normalised without a panic, a second
// pass changes nothing, no sport-53 input accept survives, and
// VerifyLegacy never panics on the result.
func FuzzNormalizeLegacy(f *testing.F) {
	f.Add(golden(f, "shield-0.6.5-dnsmasq.nft"))
	f.Add("table inet terok_shield {\n chain input {\n udp sport 53 accept\n }\n}\n")
	f.Add("chain output {\n ip daddr @allow_v4 accept\n ip daddr @deny_v4 reject\n")
	f.Fuzz(func(t *testing.T, s string) {
		out, _ := NormalizeLegacy(s)
		again, ch := NormalizeLegacy(out)
		if again != out || len(ch) != 0 {
			t.Fatalf("second pass changed %q", ch)
		}
		_ = VerifyLegacy(out)
	})
}
