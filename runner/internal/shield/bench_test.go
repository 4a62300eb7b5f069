package shield

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"terok.dev/sandbox/runner/internal/podman"
)

// testFacts is a host-facts cache in dir keyed by the test's containers.conf
// files.
func testFacts(dir string, paths HostPaths, euid int) podman.InfoCache {
	c := podman.NewInfoCache(dir, nil, euid)
	c.ConfFiles = append([]string{paths.UserContainersConf}, paths.SystemContainersConfs...)
	return c
}

// BenchmarkPreStart measures the pre-start step for a new task (bundle
// written, args returned) with the host's real tools and a warm
// podman-facts cache, the way every `terok-sandbox run` after the first one
// pays it.
func BenchmarkPreStart(b *testing.B) {
	if _, err := exec.LookPath("podman"); err != nil {
		b.Skip("podman not installed")
	}
	paths, _ := testPaths(b)
	hookDir := b.TempDir()
	hook := filepath.Join(hookDir, "terok-shield-hook")
	if err := writeScript(hook, "echo 4\n"); err != nil {
		b.Fatal(err)
	}
	if _, err := Setup(context.Background(), SetupOptions{User: true, HookBinary: hook, Paths: paths}); err != nil {
		b.Fatal(err)
	}
	cache := b.TempDir()
	root := b.TempDir()
	log, _ := testLog()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A new task directory each time, as for a new container.
		state := filepath.Join(root, strconv.Itoa(i), "shield")
		s := New(Config{StateDir: state, DefaultProfiles: []string{"dev-standard"}, LoopbackPorts: []int{9418, 18731, 18732}, AuditEnabled: true},
			Options{Paths: paths, HookBinary: hook, EUID: 0, Log: log, Facts: testFacts(cache, paths, 0)})
		if _, err := s.PreStart(ctx, "bench", nil); err != nil {
			b.Fatal(err)
		}
	}
}
