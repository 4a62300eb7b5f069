//go:build e2e

package e2e

// Refused traffic on record end to end (docs/shield.md, Refused traffic:
// shield log and shield watch): real podman, rootful and rootless, the real
// hook as a global hook, the container's resolver reading NFLOG; a test
// host in a network namespace of this test's own that the shield does not
// allow.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

// str is a JSON member as text ("" when absent).
func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

// jsonLines parses every JSON line of s.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestShieldRefusedRecords(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 1)
	host := addrs[0]
	out.tcpEcho(t, host, "refused-e2e")
	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		shxShieldRunner(t, ctx, r)
		gate := shxNewHostService(t)
		// A profile that does not list the test host.
		profiles := shxProfileConfig(t, r, gate.port, "rf", "listed.rf-e2e.example\n")
		probeDir := filepath.Join(r.Base, "probe")
		if err := r.Mkdir(probeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		escBuildProbe(t, ctx, "udpflood", filepath.Join(probeDir, "udpflood"))
		name := r.Name("rf")
		shxSandboxOK(t, ctx, r, "run", "--name", name, "--project", "rfp", "--task", "rf-task", "--image", env.Image, "-v", probeDir+":/probe:ro", "--", "sleep", "600")
		shieldDir := filepath.Join(r.Dirs.State, "tasks", name, "shield")

		// watch sees an attempt: it streams from its start, so attempts
		// are repeated until one shows (a generous deadline; no speed
		// is asserted).
		bin, err := r.Env().Bin("terok-sandbox")
		if err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		watch := r.Command(wctx, bin, "shield", "watch", "--json", name)
		var wout, werr testkit.Buffer
		watch.Stdout, watch.Stderr = &wout, &werr
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		seen := func() bool {
			for _, m := range jsonLines(t, wout.String()) {
				if m["event"] == "refused" && m["dst"] == host && str(m["dport"]) == shxOutsidePort && m["proto"] == "tcp" {
					return true
				}
			}
			return false
		}
		deadline := time.Now().Add(60 * time.Second)
		for !seen() {
			if time.Now().After(deadline) {
				t.Fatalf("shield watch saw no attempt:\n%s\nstderr: %s", wout.String(), werr.String())
			}
			if ok, msg := shxReach(ctx, r, name, host, shxOutsidePort, "refused-e2e"); ok {
				t.Fatalf("the test host is reachable: %s", msg)
			}
			time.Sleep(time.Second)
		}
		shxSandboxOK(t, ctx, r, "shield", "deny", name, host)
		shxWaitFor(t, 30*time.Second, "the deny action in shield watch", func() bool {
			for _, m := range jsonLines(t, wout.String()) {
				if m["event"] == "action" && m["action"] == "denied" && m["dest"] == host {
					return true
				}
			}
			return false
		})
		if err := watch.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := watch.Wait(); err != nil {
			t.Fatalf("shield watch after SIGTERM: %v (stderr %s)", err, werr.String())
		}

		// A refused name and an attempt to the denied address.
		shxInContainer(ctx, r, name, "nslookup -timeout=2 phone-home.rf-e2e.example 127.0.0.1")
		shxReach(ctx, r, name, host, shxOutsidePort, "refused-e2e")
		want := map[string]func(m map[string]any) bool{
			"not-allowlisted tcp": func(m map[string]any) bool {
				return m["event"] == "refused" && m["reason"] == "not-allowlisted" && m["dst"] == host && m["proto"] == "tcp" && m["container"] == name
			},
			"denied tcp": func(m map[string]any) bool {
				return m["event"] == "refused" && m["reason"] == "denied" && m["dst"] == host && str(m["dport"]) == shxOutsidePort
			},
			"dns": func(m map[string]any) bool {
				return m["event"] == "dns-refused" && m["name"] == "phone-home.rf-e2e.example" && m["container"] == name
			},
			"setup action": func(m map[string]any) bool { return m["event"] == "action" && m["action"] == "setup" },
		}
		var log string
		shxWaitFor(t, 30*time.Second, "records in shield log", func() bool {
			log = shxSandboxOK(t, ctx, r, "shield", "log", "--json", name)
			lines := jsonLines(t, log)
			for _, ok := range want {
				found := false
				for _, m := range lines {
					found = found || ok(m)
				}
				if !found {
					return false
				}
			}
			return true
		})
		// The same records in the task's timeline (docs/audit.md, The
		// audit command): found through the container's task label, the
		// operator's actions included.
		au := shxSandboxOK(t, ctx, r, "audit", "rf-task", "--project", "rfp", "--json")
		auLines := jsonLines(t, au)
		for what, ok := range want {
			found := false
			for _, m := range auLines {
				found = found || (ok(m) && m["channel"] == "shield")
			}
			if !found {
				t.Errorf("terok-sandbox audit rf-task lacks the %s record:\n%s", what, au)
			}
		}
		table := shxSandboxOK(t, ctx, r, "shield", "log", "-n", "3", name)
		if rows := strings.Split(strings.TrimSpace(table), "\n"); len(rows) != 4 || !strings.HasPrefix(rows[0], "TIME") {
			t.Errorf("shield log -n 3: %s", table)
		}
		if s := shxSandboxOK(t, ctx, r, "shield", "log", "--json", "--since", "2099-01-01", name); s != "" {
			t.Errorf("--since in the future: %s", s)
		}

		// A suggested profile: the refused name and the test host's
		// address (refused as not allowlisted before the deny), a
		// profile `shield entries` reads.
		sugg := filepath.Join(profiles, "rf-suggested.txt")
		shxSandboxOK(t, ctx, r, "shield", "profile", "suggest", "--output", sugg, name)
		entries := shxSandboxOK(t, ctx, r, "shield", "entries", "rf-suggested")
		for _, w := range []string{"phone-home.rf-e2e.example", host} {
			if !strings.Contains(entries, w+"\n") {
				t.Errorf("suggested profile lacks %s:\n%s", w, entries)
			}
		}
		if res := r.Sandbox(ctx, "shield", "profile", "suggest", "--output", sugg, name); res.Code != 1 {
			t.Errorf("suggest over an existing file: %s", res)
		}

		// A 10,000-attempt flood: the record files stay within their
		// bound (3 MiB), and the container and its resolver still answer.
		res := r.Podman(ctx, "exec", "--user", "1000:1000", name, "/probe/udpflood", "-host", host, "-n", "10000")
		if res.Code != 0 {
			t.Fatalf("flood: %s", res)
		}
		t.Logf("flood: %s", strings.TrimSpace(res.Stdout))
		var total int64
		for _, f := range []string{"refused.jsonl", "refused.jsonl.1", "refused.jsonl.2", "refused.jsonl.3"} {
			if st, err := os.Stat(filepath.Join(shieldDir, f)); err == nil {
				total += st.Size()
			}
		}
		t.Logf("refused.jsonl and rotations after the flood: %d bytes", total)
		if total == 0 || total > 3<<20 {
			t.Errorf("refused records: %d bytes, want some and at most 3 MiB", total)
		}
		if res := shxInContainer(ctx, r, name, "echo alive"); res.Code != 0 || !strings.Contains(res.Stdout, "alive") {
			t.Fatalf("container after the flood: %s", res)
		}
		if res := shxInContainer(ctx, r, name, "nslookup -timeout=2 another.rf-e2e.example 127.0.0.1"); !strings.Contains(res.Stdout+res.Stderr, "REFUSED") && !strings.Contains(res.Stdout+res.Stderr, "can't find") {
			t.Fatalf("resolver after the flood: %s", res)
		}

		// Usage and a missing container.
		if res := r.Sandbox(ctx, "shield", "watch"); res.Code != 2 {
			t.Errorf("watch without a container: %s", res)
		}
		if res := r.Sandbox(ctx, "shield", "log", r.Name("missing")); res.Code != 1 {
			t.Errorf("log of a missing container: %s", res)
		}
	})
}
