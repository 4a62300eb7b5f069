package shield

import (
	"context"

	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// The launch path needs two host facts that cost an exec to learn: podman's
// version (and, rootless, its network mode) and the DNS tier (a `dnsmasq
// --version` run). Both come from the runner's one host-facts cache
// (podman.InfoCache in the runtime directory), keyed by everything that can
// change them; see its documentation for the keys and the root fast path.

// queryPodman returns the facts pre-start needs (shield.md §5).
func (s *Shield) queryPodman(ctx context.Context) podmaninfo.Info {
	facts := s.opts.Facts
	if facts.LookPath == nil {
		facts.LookPath = func(name string) string { return s.opts.Tools.LookPath(name) }
	}
	return facts.Info(ctx, s.podmanPath())
}

// detectTier is Tools.DetectTier through the host-facts cache, keyed by
// the dnsmasq and dig executables (their presence and identity decide it).
func (s *Shield) detectTier(ctx context.Context) string {
	deps := []string{s.opts.Tools.LookPath("dnsmasq"), s.opts.Tools.LookPath("dig")}
	valid := func(v string) bool { return v == TierDnsmasq || v == TierDig || v == TierGetent }
	return s.opts.Facts.Memo("dns-tier", deps, valid, func() (string, bool) {
		return s.opts.Tools.DetectTier(ctx), true
	})
}
