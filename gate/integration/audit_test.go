package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/names"
)

// records reads the gate's audit file (the default beside the base path).
func (f *fixture) records(t *testing.T) []audit.Record {
	t.Helper()
	recs, err := audit.ReadFile(filepath.Join(f.dir, "audit", "gate.jsonl"), func(m string) { t.Errorf("audit reader: %s", m) })
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func summary(recs []audit.Record) []string {
	var out []string
	for _, r := range recs {
		s := r.Event + " " + r.Outcome
		if r.Reason != "" {
			s += " " + r.Reason
		}
		out = append(out, s)
	}
	return out
}

// TestAuditRecords runs real git through the gate and checks one record per
// operation and per refusal (docs/audit.md, Channel gate).
func TestAuditRecords(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	dst := filepath.Join(f.dir, "clone")
	f.git("", "-c", "protocol.version=2", "clone", "-q", g.url(f.tokProj, "proj.git"), dst)
	f.git(dst, "-c", "protocol.version=0", "fetch", "-q", "origin")
	os.WriteFile(filepath.Join(dst, "n.txt"), []byte("n"), 0o644)
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "n")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/task-1")
	newID := f.git(dst, "rev-parse", "HEAD")
	f.git("", "-c", "protocol.version=0", "clone", "-q", "--bare", g.url(f.tokProj, "proj.git"), filepath.Join(f.dir, "v0.git"))
	// Refusals: another project's repository, an unknown token, a revoked one.
	if _, err := f.tryGit("", "ls-remote", g.url(f.tokProj, "other.git")); err == nil {
		t.Fatal("other project listed")
	}
	if _, err := f.tryGit("", "ls-remote", g.url("terok-g-00000000000000000000000000000000", "proj.git")); err == nil {
		t.Fatal("unknown token listed")
	}
	if _, err := f.store.Revoke(names.TaskRef{Project: "other", Task: "2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.tryGit("", "ls-remote", g.url(f.tokOther, "other.git")); err == nil {
		t.Fatal("revoked token listed")
	}
	recs := f.records(t)
	got := strings.Join(summary(recs), "\n")
	want := strings.Join([]string{
		"ls-refs ok", "clone ok", // v2 clone
		"ls-refs ok", // v0 fetch: the advertisement; nothing new to fetch
		"push ok",
		"ls-refs ok", "clone ok", // v0 clone
		"ls-refs refused wrong-project",
		"ls-refs refused unknown-token",
		"ls-refs refused revoked",
	}, "\n")
	if got != want {
		t.Fatalf("records:\n%s\nwant:\n%s", got, want)
	}
	for i, r := range recs {
		if r.Channel != "gate" || r.TokenPrefix == "" || len(r.TokenPrefix) > 12 || r.Fields["repo"] == nil || r.Fields["status"] == nil {
			t.Errorf("record %d lacks common members: %+v", i, r)
		}
	}
	clone := recs[1]
	if clone.Project != "proj" || clone.Task != "1" || clone.Fields["resp_bytes"].(float64) < 100 || clone.Fields["protocol"] != "v2" {
		t.Errorf("clone record: %+v", clone)
	}
	push := recs[3]
	b, _ := json.Marshal(push.Fields["refs"])
	if !strings.Contains(string(b), `"ref":"refs/heads/task-1"`) || !strings.Contains(string(b), `"new":"`+newID+`"`) ||
		!strings.Contains(string(b), `"old":"0000000000000000000000000000000000000000"`) || push.Fields["req_bytes"].(float64) < 100 {
		t.Errorf("push record: %+v refs %s", push, b)
	}
	if r := recs[8]; r.Project != "other" || r.Task != "2" {
		t.Errorf("revoked record names %q/%q, want other/2", r.Project, r.Task)
	}
	// No record holds a whole token.
	data, _ := os.ReadFile(filepath.Join(f.dir, "audit", "gate.jsonl"))
	for _, tok := range []string{f.tokProj, f.tokOther} {
		if strings.Contains(string(data), tok) {
			t.Fatal("a token is in the audit file")
		}
	}
	if st, err := os.Stat(filepath.Join(f.dir, "audit", "gate.jsonl")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("audit file mode: %v %v", st, err)
	}
}

func TestAuditOff(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.dir, "elsewhere", "g.jsonl")
	g := f.startGate([]string{"--audit-file=" + p})
	f.git("", "ls-remote", g.url(f.tokProj, "proj.git"))
	if recs, err := audit.ReadFile(p, nil); err != nil || len(recs) != 1 {
		t.Fatalf("--audit-file: %d records, %v", len(recs), err)
	}
	f2 := newFixture(t)
	g2 := f2.startGate([]string{"--audit-file=off"})
	f2.git("", "ls-remote", g2.url(f2.tokProj, "proj.git"))
	if _, err := os.Stat(filepath.Join(f2.dir, "audit")); !os.IsNotExist(err) {
		t.Fatalf("--audit-file=off wrote records: %v", err)
	}
}

// An explicit audit file that cannot be opened stops the gate; the
// default one only turns the records off, with an error in the log.
func TestAuditFileUnwritable(t *testing.T) {
	// A file where a directory should be blocks the path even for root.
	f := newFixture(t)
	blocker := filepath.Join(f.dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gateBin, "--base-path="+f.base, "--token-file="+f.tokfile, "--foreground",
		"--port=1", "--audit-file="+filepath.Join(blocker, "g.jsonl")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "--audit-file") {
		t.Fatalf("unwritable --audit-file: %v %s", err, out)
	}
	// The default's directory blocked by a file: the gate serves.
	if err := os.WriteFile(filepath.Join(f.dir, "audit"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(f.dir, "gate.log")
	g := f.startGate([]string{"--log-file=" + logFile})
	f.git("", "ls-remote", g.url(f.tokProj, "proj.git"))
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "audit records are off") {
		t.Fatalf("no error about the default audit file in the log: %s", log)
	}
}
