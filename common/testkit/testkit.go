// Package testkit holds the helpers the tests of several modules share. It
// is imported only from _test.go files (test/houserules checks that), so
// nothing here reaches a product binary.
package testkit

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"terok.dev/sandbox/common/config"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: the
// kernel picks it for a listener that is closed again at once. Another
// process may take it before the caller binds it; tests that start a daemon
// on it retry on "address in use" where that matters.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := PickPort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// PickPort is FreePort for code without a testing.TB, such as a TestMain
// that prepares a host before any test runs.
func PickPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago. Two FreePort calls may return the same port (the first
// listener is closed before the second picks, and the kernel's pick is
// random), which a test starting two daemons, one on each, cannot take;
// here all n listeners are open together, so the ports differ.
func FreePorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("pick a free loopback port: %v", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// RootVars are the environment variables that move every root the sandbox
// resolves (docs/config.md, Base directories) under dir: state, run, cfg,
// cred and umbrella. Nothing is created; the code under test creates what
// it writes. Tests never use the user's real roots.
func RootVars(dir string) map[string]string {
	return map[string]string{
		"TEROK_SANDBOX_STATE_DIR":   filepath.Join(dir, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR": filepath.Join(dir, "run"),
		"TEROK_SANDBOX_CONFIG_DIR":  filepath.Join(dir, "cfg"),
		"TEROK_CREDENTIALS_DIR":     filepath.Join(dir, "cred"),
		"TEROK_CONFIG_DIR":          filepath.Join(dir, "umbrella"),
	}
}

// Env is a config.Env that reads vars only (no variable of the test
// process leaks in), with the given effective UID and home directory.
func Env(vars map[string]string, euid int, home string) config.Env {
	return config.Env{EUID: euid, Home: home, Getenv: func(k string) string { return vars[k] }}
}

// Environ turns vars into NAME=value entries for exec.Cmd.Env, sorted by
// name so a command line in a failure message reads the same every run.
func Environ(vars map[string]string) []string {
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// DocExamples returns the example records of a docs file: the non-blank
// lines of its ```jsonl blocks (docs/audit.md, Examples), in file order.
// path is relative to the test's package directory. It fails tb when the
// file cannot be read or holds fewer than atLeast examples, so a test
// against the documented contract cannot pass on an emptied doc.
func DocExamples(tb testing.TB, path string, atLeast int) []string {
	tb.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var lines []string
	in := false
	for _, l := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(l, "```jsonl"):
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in && strings.TrimSpace(l) != "":
			lines = append(lines, l)
		}
	}
	if len(lines) < atLeast {
		tb.Fatalf("only %d example records in %s (want at least %d)", len(lines), path, atLeast)
	}
	return lines
}

// Buffer is a bytes.Buffer that a running command or server may write
// while the test reads it: Write and String take a lock. The zero value
// is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
