package testkit

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
)

// rootNames are the variables RootVars sets, sorted.
func rootNames() []string {
	var names []string
	for k := range RootVars("") {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Run is m.Run for the TestMain of a package whose tests start the
// project's binaries (docs/testing.md, Shared test helpers). It points
// every root variable (RootVars) of this process at a fresh directory, so
// that every child inherits it; runs the tests; and then fails the run
// loudly, naming the paths, when a default root (what a binary resolves
// when no variable reaches it: docs/config.md, Base directories) gained an
// entry meanwhile. That catches a child whose environment was dropped on
// the way, such as one started through systemd-socket-activate, which
// clears it (pass ActivateEnv). A default root that did not exist before
// the run is removed again, so that the next run sees the same host.
func Run(m *testing.M) int {
	return runGuarded(m.Run, os.Stderr, defaultEnv())
}

// defaultEnv is the environment the default roots are resolved from: the
// process's own, without the root variables.
func defaultEnv() config.Env {
	env := config.FromOS()
	env.Getenv = func(k string) string {
		for _, n := range rootNames() {
			if k == n {
				return ""
			}
		}
		return os.Getenv(k)
	}
	return env
}

// defaultRoots are the five roots env resolves to, sorted.
func defaultRoots(env config.Env) []string {
	roots := []string{env.StateRoot(), env.RuntimeRoot(), env.ConfigRoot(), env.CredentialsRoot(), env.UmbrellaConfigRoot()}
	sort.Strings(roots)
	return roots
}

func runGuarded(run func() int, stderr io.Writer, defaults config.Env) int {
	dir, err := os.MkdirTemp("", "terok-test-roots-")
	if err != nil {
		fmt.Fprintf(stderr, "testkit.Run: make the test roots: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	for k, v := range RootVars(dir) {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintf(stderr, "testkit.Run: set %s: %v\n", k, err)
			return 1
		}
	}
	guard := WatchRoots(defaultRoots(defaults))
	code := run()
	if err := guard(); err != nil {
		fmt.Fprintf(stderr, "FAIL: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// WatchRoots records what is below each of roots and returns a check that
// reports every path that appeared since, as one error. For a root that
// did not exist at the call, the check also removes what appeared from the
// topmost new directory down (/var/lib/terok for /var/lib/terok/sandbox on
// a host with no terok state), so a stray does not hide itself from the
// next run; inside a root that existed (a real installation) it removes
// nothing.
func WatchRoots(roots []string) func() error {
	type watch struct {
		root, top string // top: the highest new ancestor to remove, "" when the root existed
		before    map[string]bool
	}
	var ws []watch
	for _, r := range roots {
		w := watch{root: r}
		if _, err := os.Lstat(r); err != nil {
			w.top = r
			for p := filepath.Dir(r); p != filepath.Dir(p); p = filepath.Dir(p) {
				if _, err := os.Lstat(p); err == nil {
					break
				}
				w.top = p
			}
		} else {
			w.before = listTree(r)
		}
		ws = append(ws, w)
	}
	return func() error {
		var strays []string
		for _, w := range ws {
			for p := range listTree(w.root) {
				if !w.before[p] {
					strays = append(strays, p)
				}
			}
		}
		if len(strays) == 0 {
			return nil
		}
		sort.Strings(strays)
		msg := fmt.Sprintf("a test wrote under a default root (docs/testing.md, Shared test helpers): %s", strings.Join(strays, ", "))
		var removed []string
		for _, w := range ws {
			if w.top == "" {
				continue
			}
			if _, err := os.Lstat(w.top); err == nil {
				if err := os.RemoveAll(w.top); err != nil {
					msg += fmt.Sprintf("; could not remove %s: %v", w.top, err)
				} else {
					removed = append(removed, w.top)
				}
			}
		}
		if len(removed) > 0 {
			msg += "; removed " + strings.Join(removed, ", ")
		}
		return fmt.Errorf("%s; some child got no root variables (see ActivateEnv), or another test on this host wrote there at the same time", msg)
	}
}

// listTree returns the paths below root and root itself; at most 10000,
// which a test host's default roots never reach.
func listTree(root string) map[string]bool {
	out := map[string]bool{}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		out[p] = true
		if len(out) >= 10000 {
			return filepath.SkipAll
		}
		return nil
	})
	return out
}

// ActivateEnv is "-E NAME=value" for each root variable this process has:
// systemd-socket-activate starts its command with an empty environment,
// so a daemon started through it gets its roots only this way.
func ActivateEnv() []string {
	var a []string
	for _, n := range rootNames() {
		if v := os.Getenv(n); v != "" {
			a = append(a, "-E", n+"="+v)
		}
	}
	return a
}
