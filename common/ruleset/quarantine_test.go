package ruleset

import (
	"strings"
	"testing"
)

func TestQuarantineText(t *testing.T) {
	q := Quarantine()
	if errs := VerifyQuarantine(q); len(errs) != 0 {
		t.Fatalf("rendered quarantine table does not verify: %v\n%s", errs, q)
	}
	if got := Classify(q); got != StateQuarantine {
		t.Fatalf("Classify = %s", got)
	}
	for _, bad := range []string{"ct state", "meta mark", "@gateway", "@allow", "@dns", "policy accept", "queue"} {
		if strings.Contains(q, bad) {
			t.Errorf("quarantine table contains %q:\n%s", bad, q)
		}
	}
	hook, _ := Hook(Options{DNS: SlirpDNS, LoopbackPorts: []int{9418}})
	bypass, _ := Bypass(Options{DNS: SlirpDNS, LoopbackPorts: []int{9418}}, true)
	for name, other := range map[string]string{"hook": hook, "bypass": bypass, "empty": "", "garbage": "table ip x {\n}\n"} {
		if errs := VerifyQuarantine(other); len(errs) == 0 {
			t.Errorf("%s table verifies as quarantine", name)
		}
	}
	if errs := VerifyHook(q, false); len(errs) == 0 {
		t.Error("quarantine table verifies as enforcing")
	}
	if errs := VerifyBypass(q, true); len(errs) == 0 {
		t.Error("quarantine table verifies as bypass")
	}
}

// TestQuarantineOnTheKernel applies the quarantine table with nft in a
// throw-away netns (over an enforcing table, as `shield quarantine` does),
// checks the listing verifies and classifies, and that each tampered
// variant is caught.
func TestQuarantineOnTheKernel(t *testing.T) {
	ns := newNetns(t)
	hook, _, err := Script{Options: Options{DNS: SlirpDNS, LoopbackPorts: []int{9418}}, Allow: []string{"198.51.100.0/24"}, Gateways: SlirpGateways()}.Render()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ns.nft(hook, "-f", "-"); err != nil {
		t.Fatalf("apply hook table: %v %s", err, out)
	}
	q := Quarantine() + AddElements(KindGateway, SlirpGateways(), false)
	if out, err := ns.nft(Replace(true, q), "-f", "-"); err != nil {
		t.Fatalf("apply quarantine: %v %s", err, out)
	}
	listing, err := ns.nft("", "list", "table", "inet", "terok_shield")
	if err != nil {
		t.Fatal(listing)
	}
	if errs := VerifyQuarantine(listing); len(errs) != 0 {
		t.Fatalf("listed quarantine table: %v\n%s", errs, listing)
	}
	if got := Classify(listing); got != StateQuarantine {
		t.Fatalf("Classify = %s\n%s", got, listing)
	}
	// Elements still go into the declared sets (the resolver's learned
	// addresses, a live allow), without a rule that uses them.
	if out, err := ns.nft(AddElements(KindDNS, []string{"198.51.100.7"}, false)+AddElements(KindAllow, []string{"203.0.113.0/24"}, false), "-f", "-"); err != nil {
		t.Fatalf("elements into the quarantine table's sets: %v %s", err, out)
	}

	tests := []struct{ name, old, new, want string }{
		{"conntrack accept", "        oifname \"lo\" accept\n", "        oifname \"lo\" accept\n        ct state established,related accept\n", "output chain rules differ"},
		{"dns accept", "        oifname \"lo\" accept\n", "        oifname \"lo\" accept\n        udp dport 53 accept\n", "output chain rules differ"},
		{"sport 53 input", "        iifname \"lo\" accept\n", "        iifname \"lo\" accept\n        udp sport 53 accept\n", "input chain rules differ"},
		{"lo dns open", "        oifname \"lo\" udp dport 53 log group 100 prefix \"TEROK_SHIELD_DENIED: \" counter reject with icmpx admin-prohibited\n", "", "output chain rules differ"},
		{"policy accept", "hook output priority filter; policy drop;", "hook output priority filter; policy accept;", "output chain is not a drop-policy output hook"},
		{"extra chain", "    chain input {", "    chain extra {\n        accept\n    }\n\n    chain input {", "unexpected chain extra"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(Quarantine(), tc.old, tc.new, 1)
			if bad == Quarantine() {
				t.Fatal("replacement did not apply")
			}
			if out, err := ns.nft(Replace(true, bad), "-f", "-"); err != nil {
				t.Fatalf("apply: %v %s", err, out)
			}
			listing, err := ns.nft("", "list", "table", "inet", "terok_shield")
			if err != nil {
				t.Fatal(listing)
			}
			errs := VerifyQuarantine(listing)
			if !strings.Contains(strings.Join(errs, "; "), tc.want) {
				t.Fatalf("errors %v lack %q\n%s", errs, tc.want, listing)
			}
			if Classify(listing) == StateQuarantine {
				t.Fatal("tampered table classified quarantine")
			}
		})
	}
}
