package seccomp

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/podman"
)

func TestInstallAndLoad(t *testing.T) {
	readPodmanDefault(t)
	dir := filepath.Join(t.TempDir(), "config")
	dst := Path(dir)
	euid := os.Geteuid()
	if err := Load(dst, euid); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "shield setup") {
		t.Fatalf("missing profile: %v", err)
	}
	if err := Install(podmanDefault, dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("installed profile: %v %v", st, err)
	}
	if err := Load(dst, euid); err != nil {
		t.Fatalf("Load of a fresh install: %v", err)
	}
	// Installing again replaces the file in place.
	if err := Install(podmanDefault, dst); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"group writable", func(t *testing.T, p string) { must(t, os.Chmod(p, 0o664)) }, "writable by group or others"},
		{"world writable dir", func(t *testing.T, p string) { must(t, os.Chmod(filepath.Dir(p), 0o777)) }, "writable by group or others"},
		{"symlink", func(t *testing.T, p string) {
			real := p + ".real"
			must(t, os.Rename(p, real))
			must(t, os.Symlink(real, p))
		}, "not a regular file"},
		{"podman's own profile", func(t *testing.T, p string) {
			data, err := os.ReadFile(podmanDefault)
			must(t, err)
			must(t, os.WriteFile(p, data, 0o644))
		}, "socket(AF_VSOCK) is allowed"},
		{"installed before the keyring refusal", func(t *testing.T, p string) {
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.WriteFile(p, beforeKeyrings(t, data), 0o644))
		}, "keyctl is not refused without conditions"},
		{"garbage", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("{"), 0o644)) }, "not a seccomp profile"},
		{"unreadable", func(t *testing.T, p string) {
			if euid == 0 {
				t.Skip("root reads any file")
			}
			must(t, os.Chmod(p, 0o200))
		}, "permission denied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "config")
			p := Path(d)
			if err := Install(podmanDefault, p); err != nil {
				t.Fatal(err)
			}
			// A memo that accepted the installed content must not let the
			// changed file (or its changed mode) through.
			memo := &countingMemo{c: podman.NewInfoCache(t.TempDir(), func(string) string { return "" }, euid)}
			if err := LoadMemo(p, euid, memo); err != nil {
				t.Fatal(err)
			}
			c.setup(t, p)
			for _, m := range []VerifiedMemo{nil, memo} {
				err := LoadMemo(p, euid, m)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("Load (memo %v): %v; want %q", m != nil, err, c.want)
				}
				if !strings.Contains(err.Error(), "shield setup") && !strings.Contains(err.Error(), "chmod go-w") {
					t.Fatalf("error names no fix: %v", err)
				}
			}
		})
	}
}

// countingMemo is the runner's real host-facts cache, counting how often
// it had to compute (i.e. run Verify).
type countingMemo struct {
	c        podman.InfoCache
	computed int
}

func (m *countingMemo) Memo(name string, deps []string, valid func(string) bool, compute func() (string, bool)) string {
	return m.c.Memo(name, deps, valid, func() (string, bool) { m.computed++; return compute() })
}

// TestLoadMemo: a content Verify accepted is not verified again by the
// same executable; another content is, and only an accepted one is
// remembered.
func TestLoadMemo(t *testing.T) {
	readPodmanDefault(t)
	euid := os.Geteuid()
	p := Path(filepath.Join(t.TempDir(), "config"))
	must(t, Install(podmanDefault, p))
	memo := &countingMemo{c: podman.NewInfoCache(t.TempDir(), func(string) string { return "" }, euid)}
	for i := 0; i < 3; i++ {
		if err := LoadMemo(p, euid, memo); err != nil {
			t.Fatal(err)
		}
	}
	if memo.computed != 1 {
		t.Fatalf("Verify ran %d times for one content, want 1", memo.computed)
	}
	good, err := os.ReadFile(p)
	must(t, err)
	// Podman's own profile (AF_VSOCK allowed) is refused, every time.
	bad, err := os.ReadFile(podmanDefault)
	must(t, err)
	must(t, os.WriteFile(p, bad, 0o644))
	for i := 0; i < 2; i++ {
		if err := LoadMemo(p, euid, memo); err == nil || !strings.Contains(err.Error(), "AF_VSOCK") {
			t.Fatalf("refused content %d: %v", i, err)
		}
	}
	if memo.computed != 3 {
		t.Fatalf("Verify ran %d times, want 3 (a refusal is not remembered)", memo.computed)
	}
	// Back to the accepted content: a hit by its digest (the refusals
	// were not remembered).
	must(t, os.WriteFile(p, good, 0o644))
	if err := LoadMemo(p, euid, memo); err != nil {
		t.Fatal(err)
	}
	if memo.computed != 3 {
		t.Fatalf("Verify ran %d times, want 3 (the accepted content is remembered by its digest)", memo.computed)
	}
}

func TestInstallRefusesOpenDirectory(t *testing.T) {
	readPodmanDefault(t)
	dir := filepath.Join(t.TempDir(), "open")
	must(t, os.Mkdir(dir, 0o777))
	must(t, os.Chmod(dir, 0o777))
	if err := Install(podmanDefault, Path(dir)); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("Install into a world-writable directory: %v", err)
	}
	if _, err := os.Stat(Path(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a profile was written anyway: %v", err)
	}
}

func TestInstallBadSource(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	must(t, os.WriteFile(bad, []byte(`{"syscalls":[]}`), 0o644))
	if err := Install(bad, Path(filepath.Join(dir, "c"))); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad source: %v", err)
	}
	if err := Install(filepath.Join(dir, "none.json"), Path(filepath.Join(dir, "c"))); err == nil {
		t.Fatal("missing source accepted")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLoad is the cost Load adds to every launch: "verify" without
// a memo (a first launch, or a new executable), "memo" with the runner's
// host-facts cache holding the accepted content (every other launch).
func BenchmarkLoad(b *testing.B) {
	readPodmanDefault(b)
	p := Path(b.TempDir())
	if err := Install(podmanDefault, p); err != nil {
		b.Fatal(err)
	}
	euid := os.Geteuid()
	facts := podman.NewInfoCache(b.TempDir(), func(string) string { return "" }, euid)
	for _, bc := range []struct {
		name string
		memo VerifiedMemo
	}{{"verify", nil}, {"memo", facts}} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := LoadMemo(p, euid, bc.memo); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
