package auditq_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/credproxy/internal/auditq"
	"terok.dev/sandbox/credproxy/internal/proxy"
)

const procsEnv = "TEROK_AUDITQ_PROC"

// TestProxyWriterProcess is the child of TestProxyWriterProcessesRotation:
// the proxy's own writer path (proxy.EncodeEntry through an auditq.Queue to
// audit.Writer.WriteLines), as the daemon runs it, with a small MaxBytes so
// the eight children rotate the file under each other many times.
func TestProxyWriterProcess(t *testing.T) {
	proc := os.Getenv(procsEnv)
	if proc == "" {
		t.Skip("helper only")
	}
	n, err := strconv.Atoi(os.Getenv("TEROK_AUDITQ_N"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(os.Getenv("TEROK_AUDITQ_PATH"), audit.Options{MaxBytes: 8 << 10, Keep: 10000})
	if err != nil {
		t.Fatal(err)
	}
	// A small queue: Put waits for the disk now and then, as under load.
	q := auditq.New(w, proxy.EncodeEntry, 8, nil)
	for i := 0; i < n; i++ {
		path := "/v1/messages/" + strconv.Itoa(i)
		status, req, resp, ms := 200, int64(i), int64(2*i), 1.5
		q.Put(proxy.Entry{Time: time.Now(), Event: "request", Outcome: "ok", Project: "proj", Task: "proc-" + proc,
			TokenPrefix: "terok-p-1234", Provider: "e2e", Method: "POST", Host: "127.0.0.1", Path: &path,
			Status: &status, ReqBytes: &req, RespBytes: &resp, DurationMS: &ms})
		if i%50 == 0 {
			// Spread the batches out so the processes interleave.
			time.Sleep(time.Millisecond)
		}
	}
	q.Close()
}

// TestProxyWriterProcessesRotation: 8 processes append to one proxy audit
// file through the proxy's real writer while it rotates: every record is
// on disk exactly once, none torn, in per-process order across the
// rotated files (docs/audit.md, Files, rotation, modes).
func TestProxyWriterProcessesRotation(t *testing.T) {
	const procs, per = 8, 400
	path := filepath.Join(t.TempDir(), "audit", "proxy.jsonl")
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		c := exec.Command(os.Args[0], "-test.run=^TestProxyWriterProcess$")
		c.Env = append(os.Environ(), procsEnv+"="+strconv.Itoa(i), "TEROK_AUDITQ_PATH="+path, "TEROK_AUDITQ_N="+strconv.Itoa(per))
		c.Stderr = os.Stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = c
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper: %v", err)
		}
	}
	// Oldest first: path.N ... path.1, then path.
	var files []string
	for i := 10000; i >= 1; i-- {
		f := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	rotated := len(files)
	files = append(files, path)
	next := map[string]int{}
	total := 0
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o, want 600", f, st.Mode().Perm())
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for ln := 1; sc.Scan(); ln++ {
			r, err := audit.ParseLine(sc.Bytes())
			if err != nil {
				t.Fatalf("%s:%d torn record %q: %v", f, ln, sc.Text(), err)
			}
			seq, err := strconv.Atoi(strings.TrimPrefix(r.Fields["path"].(string), "/v1/messages/"))
			if err != nil || r.Channel != "proxy" || r.TokenPrefix != "terok-p-1234" {
				t.Fatalf("%s:%d unexpected record %q", f, ln, sc.Text())
			}
			if want := next[r.Task]; seq != want {
				t.Fatalf("%s:%d %s record %d, want %d (lost, duplicated or reordered)", f, ln, r.Task, seq, want)
			}
			next[r.Task]++
			total++
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		_ = fh.Close()
	}
	if total != procs*per || len(next) != procs {
		t.Fatalf("%d records from %d processes, want %d from %d", total, len(next), procs*per, procs)
	}
	if rotated < 5 {
		t.Fatalf("%d rotations, want several", rotated)
	}
	t.Logf("%d records, %d rotated files", total, rotated)
}
