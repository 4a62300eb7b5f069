package nftnl_test

import (
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
)

// FuzzNewPlan: every ruleset.nft the strict parser accepts must translate
// into a plan (the hook would otherwise fall back to nft for generator
// output), and no input may panic the translation.
func FuzzNewPlan(f *testing.F) {
	for _, sc := range equivCases() {
		if text, _, err := sc.Render(); err == nil && len(text) < 64<<10 {
			f.Add(text, "10.0.2.2")
		}
	}
	f.Fuzz(func(t *testing.T, text, gw string) {
		s, ok := ruleset.ParseScript(text)
		if !ok {
			return
		}
		if _, err := nftnl.NewPlan(s, nil); err != nil && !s.ReplaceExisting {
			t.Fatalf("parsed script without a plan: %v", err)
		}
		_, _ = nftnl.NewPlan(s, []string{gw})
	})
}
