package nftnl_test

import (
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
)

func TestQueueFormFromConfig(t *testing.T) {
	for cfg, want := range map[string]nftnl.QueueForm{
		"CONFIG_NF_TABLES=y\n# CONFIG_NFT_QUEUE is not set\nCONFIG_NFT_COMPAT=y\n": nftnl.QueueCompat,
		"CONFIG_NFT_QUEUE=m\n":                nftnl.QueueNative,
		"CONFIG_NFT_QUEUE=y\n":                nftnl.QueueNative,
		"# CONFIG_NFT_QUEUE_X is not set\n":   nftnl.QueueNative,
		"":                                    nftnl.QueueNative,
		"CONFIG_NFT_QUEUE_FOO=y\nsomething\n": nftnl.QueueNative,
	} {
		if got := nftnl.QueueFormFromConfig(strings.NewReader(cfg)); got != want {
			t.Errorf("%q: %s, want %s", cfg, got, want)
		}
	}
}

// TestQueueFallback: without a configuration hint the native form goes
// first; a kernel without nft_queue refuses it, nothing of that batch is
// committed, and the xtables form is applied and reads back clean. On a
// kernel with nft_queue the native form simply works.
func TestQueueFallback(t *testing.T) {
	s := newScratch(t, "qf")
	native := s.nativeQueue()
	text, _, err := ruleset.Script{Options: ruleset.Options{DNS: ruleset.SlirpDNS, Interactive: true}, Gateways: ruleset.SlirpGateways()}.Render()
	if err != nil {
		t.Fatal(err)
	}
	parsed, ok := ruleset.ParseScript(text)
	if !ok {
		t.Fatal("not parsed")
	}
	plan, err := nftnl.NewPlan(parsed, nil)
	if err != nil {
		t.Fatal(err)
	}
	nftnl.SetKernelConfig(plan, t.TempDir()+"/none.gz")
	for i := 0; i < 2; i++ { // new table, then over the leftover
		if verrs, err := s.apply(plan); err != nil || len(verrs) > 0 {
			t.Fatalf("apply %d: %v %v", i, err, verrs)
		}
		want := nftnl.QueueNative
		if !native {
			want = nftnl.QueueCompat
		}
		if plan.Queue() != want {
			t.Fatalf("apply %d: form %s, want %s", i, plan.Queue(), want)
		}
		if errs := ruleset.VerifyHook(s.listing(t), true); len(errs) > 0 {
			t.Fatalf("apply %d: %v", i, errs)
		}
	}
}
