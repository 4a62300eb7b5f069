package shield

import (
	"context"

	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// The launch path needs host facts that cost an exec to learn: podman's
// version (and, rootless, its network mode). They come from the runner's one host-facts cache
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
