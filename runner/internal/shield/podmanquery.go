package shield

import (
	"context"
	"encoding/json"
	"fmt"

	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// The launch path needs host facts that cost an exec to learn: podman's
// version (and, rootless, its network mode). They come from the runner's one host-facts cache
// (podman.InfoCache in the runtime directory), keyed by everything that can
// change them; see its documentation for the keys and the root fast path.

// queryPodman returns the facts pre-start needs (docs/shield.md, Rootful and rootless network wiring (and why)).
func (s *Shield) queryPodman(ctx context.Context) podmaninfo.Info {
	facts := s.opts.Facts
	if facts.LookPath == nil {
		facts.LookPath = func(name string) string { return s.opts.Tools.LookPath(name) }
	}
	return facts.Info(ctx, s.podmanPath())
}

// inspectContainer is `podman container inspect -- ref` read as JSON
// (`container inspect`: an image of the same name is never taken for it).
// found is false when podman knows no such container: podman then prints
// an empty JSON array and fails. Its error text is never matched; any
// other failure is an error (never guess "gone").
func (s *Shield) inspectContainer(ctx context.Context, ref string) (c podman.Container, found bool, err error) {
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, "", s.podmanPath(), "container", "inspect", "--", ref)
	if err != nil {
		return podman.Container{}, false, fmt.Errorf("podman container inspect %s: %w", ref, err)
	}
	if res.Code != 0 {
		if emptyJSONArray(res.Stdout) {
			return podman.Container{}, false, nil
		}
		return podman.Container{}, false, fmt.Errorf("podman container inspect %s failed (exit %d): %s", ref, res.Code, res.Combined())
	}
	c, err = podman.ParseInspect([]byte(res.Stdout))
	if err != nil {
		return podman.Container{}, false, fmt.Errorf("podman container inspect %s: %w", ref, err)
	}
	return c, true, nil
}

// emptyJSONArray reports whether out is exactly a JSON array with no
// elements.
func emptyJSONArray(out string) bool {
	var list []json.RawMessage
	return json.Unmarshal([]byte(out), &list) == nil && list != nil && len(list) == 0
}
