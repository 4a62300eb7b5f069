//go:build e2e

package e2e

import (
	"context"
	"strings"
	"terok.dev/sandbox/runner/internal/testharness"
	"testing"
	"time"
)

// The test image carries what every component's e2e tests rely on, and both
// root and the rootless user can run it with the test containers.conf.
func TestHarnessImage(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res := r.Podman(ctx, "run", "--rm", "--name", r.Name("img"), H(t).Image, "sh", "-c",
			"for b in sh bash git ssh ssh-keygen curl wget socat nc; do command -v $b >/dev/null || echo missing $b; done; id -u dev; echo done")
		if res.Code != 0 {
			t.Fatalf("podman run: %s", res)
		}
		if strings.Contains(res.Stdout, "missing") || !strings.Contains(res.Stdout, "1000\ndone") {
			t.Fatalf("image content: %q", res.Stdout)
		}
		// The unprivileged image user can use the tools too.
		res = r.Podman(ctx, "run", "--rm", "--user", "1000:1000", "--name", r.Name("img-user"), H(t).Image, "sh", "-c", "id -u; git --version >/dev/null && touch /workspace/x && echo ok")
		if res.Code != 0 || res.Stdout != "1000\nok\n" {
			t.Fatalf("as uid 1000: %s", res)
		}
	})
}
