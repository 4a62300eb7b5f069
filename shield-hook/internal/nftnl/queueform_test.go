package nftnl_test

import (
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"

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

// TestVerifyDetectsQueueBypass: a queue rule changed in place to queue
// with bypass (either form) fails the hook's read-back and the listing's
// VerifyHook.
func TestVerifyDetectsQueueBypass(t *testing.T) {
	s := newScratch(t, "qb")
	text, _, err := ruleset.Script{Options: ruleset.Options{DNS: ruleset.SlirpDNS, Interactive: true}, Gateways: ruleset.SlirpGateways()}.Render()
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := ruleset.ParseScript(text)
	plan, err := nftnl.NewPlan(parsed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if verrs, err := s.apply(plan); err != nil || len(verrs) > 0 {
		t.Fatalf("clean apply: %v %v", err, verrs)
	}
	s.conn(t, func(c *nftnl.Conn) {
		tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.Table}
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: "output", Table: tbl})
		if err != nil {
			t.Fatal(err)
		}
		changed := 0
		for _, r := range rules {
			for i, e := range r.Exprs {
				switch v := e.(type) {
				case *expr.Queue:
					r.Exprs[i] = &expr.Queue{Num: v.Num, Total: 1, Flag: expr.QueueFlagBypass}
				case *expr.Target:
					info := append(xt.Unknown{}, *(v.Info.(*xt.Unknown))...)
					flags := binaryutil.NativeEndian.Uint16(info[4:6]) | 0x01 // NFQ_FLAG_BYPASS
					copy(info[4:6], binaryutil.NativeEndian.PutUint16(flags))
					r.Exprs[i] = &expr.Target{Name: v.Name, Rev: v.Rev, Info: &info}
				default:
					continue
				}
				r.Table, r.Chain = tbl, &nftables.Chain{Name: "output", Table: tbl}
				c.ReplaceRule(r)
				changed++
				break
			}
			if changed > 0 {
				break
			}
		}
		if changed == 0 {
			t.Fatal("no queue rule found")
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		verrs, err := plan.Verify(c)
		if err != nil || len(verrs) == 0 {
			t.Fatalf("bypass not detected by the read-back: %v %v", err, verrs)
		}
	})
	errs := ruleset.VerifyHook(s.listing(t), true)
	if !strings.Contains(strings.Join(errs, "|"), "bypass") {
		t.Fatalf("bypass not detected in the listing: %v\n%s", errs, s.listing(t))
	}
}
