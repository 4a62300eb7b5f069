package shield

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// TestVerifyResolver: the post-start verification requires the resolver's
// own report of its start, since the hook no longer waits for it. A
// resolver that gave up fails the start with its reason; one that is gone
// while the container runs fails it too; an ended container and the
// static tiers need nothing. (The real resolver writing its report is
// covered by the hook's resolver tests and the e2e shield tests.)
func TestVerifyResolver(t *testing.T) {
	ended := exec.Command("true")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}
	// A container init that exited but is not reaped yet: /proc still
	// lists it (state Z), and its resolver has already stopped.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = zombie.Wait() })
	waitZombie(t, zombie.Process.Pid)
	for _, tc := range []struct {
		name    string
		tier    string
		ready   string // resolver.ready content, "" = none
		pidFile string // resolver.pid content, "" = none
		initPID int
		want    string // error substring, "" = nil
	}{
		{"static tier", shieldbundle.TierDig, "", "", os.Getpid(), ""},
		{"gave up", shieldbundle.TierResolver, "error: read allowlist: boom\n", "1\n", os.Getpid(), "did not start: error: read allowlist: boom"},
		{"gave up, container ended", shieldbundle.TierResolver, "error: boom\n", "", ended.Process.Pid, "did not start: error: boom"},
		{"ready but dead", shieldbundle.TierResolver, "ok\n", strconv.Itoa(ended.Process.Pid) + "\n", os.Getpid(), "resolver is not running"},
		{"no report, no process", shieldbundle.TierResolver, "", "", os.Getpid(), "resolver is not running"},
		{"pid names a foreign process", shieldbundle.TierResolver, "ok\n", strconv.Itoa(os.Getpid()) + "\n", os.Getpid(), "resolver is not running"},
		{"container ended", shieldbundle.TierResolver, "ok\n", "", ended.Process.Pid, ""},
		{"container ended, init not reaped", shieldbundle.TierResolver, "ok\n", "", zombie.Process.Pid, ""},
		{"gave up, init not reaped", shieldbundle.TierResolver, "error: boom\n", "", zombie.Process.Pid, "did not start: error: boom"},
		{"live and ready", shieldbundle.TierResolver, "ok\n", "fake", os.Getpid(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write := func(name, v string) {
				if v == "" {
					return
				}
				if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write(shieldbundle.FileDNSTier, tc.tier+"\n")
			write(shieldbundle.FileResolverReady, tc.ready)
			if tc.pidFile == "fake" {
				// A process with the resolver's exact argv (resolverctl_test).
				startFakeResolver(t, dir, false)
			} else {
				write(shieldbundle.FileResolverPID, tc.pidFile)
			}
			err := verifyResolver(context.Background(), dir, "ctr", tc.initPID)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestResolverReadyRoundTrip: what the resolver writes is what the
// verification reads, one line, atomically replaced.
func TestResolverReadyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if line, err := shieldbundle.ReadResolverReady(dir); err != nil || line != "" {
		t.Fatalf("missing file: %q %v", line, err)
	}
	for _, w := range []string{"error: two\nlines", shieldbundle.ResolverReadyOK} {
		if err := shieldbundle.WriteResolverReady(dir, w); err != nil {
			t.Fatal(err)
		}
		got, err := shieldbundle.ReadResolverReady(dir)
		if err != nil || got != strings.ReplaceAll(w, "\n", " ") {
			t.Fatalf("read %q %v after writing %q", got, err, w)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// waitZombie waits until pid has exited but is not reaped (state Z).
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if procStart(pid) != "" && !processAlive(pid) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d did not become a zombie", pid)
}
