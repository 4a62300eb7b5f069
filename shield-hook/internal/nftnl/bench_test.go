package nftnl_test

import (
	"testing"

	"github.com/google/nftables"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
	"terok.dev/sandbox/shield-hook/internal/testaddrs"
)

// BenchmarkApplyVerify1000 is the hook's netlink step for a new
// container: build nothing (the plan is made once), open the socket in
// the namespace, commit the table with 1,000 allowlist entries, read it
// back and compare. The table is deleted between rounds outside the
// timer, so each round creates it afresh as for a new container.
func BenchmarkApplyVerify1000(b *testing.B) {
	benchApplyVerify(b, newScratch(b, "bn"), ruleset.Options{}, 1000)
}

// BenchmarkApplyVerifyMode is the hook's netlink step for a new container
// (as BenchmarkApplyVerify1000, with the dev-standard-sized allowlist of
// 50 entries) in enforce and in interactive mode. On a kernel without
// nft_queue the interactive side includes the refused native batch before
// the xt NFQUEUE one (Plan.Apply).
func BenchmarkApplyVerifyMode(b *testing.B) {
	for _, mode := range []string{"enforce", "interactive"} {
		b.Run(mode, func(b *testing.B) {
			benchApplyVerify(b, newScratch(b, "bm"+mode[:1]), ruleset.Options{Interactive: mode == "interactive"}, 50)
		})
	}
}

// benchApplyVerify times applying and reading back the table of opts
// (slirp DNS and the terok ports filled in) with n allowlist entries,
// deleting it outside the timer between rounds.
func benchApplyVerify(b *testing.B, s *scratchNS, opts ruleset.Options, n int) {
	opts.DNS, opts.LoopbackPorts = ruleset.SlirpDNS, []int{9418, 18731, 18732}
	text, _, err := ruleset.Script{Options: opts, Allow: testaddrs.Allowlist(n), Gateways: ruleset.SlirpGateways()}.Render()
	if err != nil {
		b.Fatal(err)
	}
	parsed, ok := ruleset.ParseScript(text)
	if !ok {
		b.Fatal("not parsed")
	}
	plan, err := nftnl.NewPlan(parsed, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if verrs, err := s.apply(plan); err != nil || len(verrs) > 0 {
			b.Fatal(err, verrs)
		}
		b.StopTimer()
		s.conn(b, func(c *nftnl.Conn) {
			c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: ruleset.Table})
			if err := c.Flush(); err != nil {
				b.Fatal(err)
			}
		})
		b.StartTimer()
	}
}

// BenchmarkKernelQueueForm is the queue-form hint every interactive apply
// reads: /proc/config.gz up to its CONFIG_NFT_QUEUE line.
func BenchmarkKernelQueueForm(b *testing.B) {
	for i := 0; i < b.N; i++ {
		_ = nftnl.KernelQueueForm("/proc/config.gz")
	}
}
