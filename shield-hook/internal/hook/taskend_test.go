package hook

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/taskend"
)

// poststop's record of the container's end (docs/security-model.md, Tokens
// that die with their task): written to the annotated task-ends directory
// with reason exited and the short id; no annotation, nothing; a directory
// that is not an absolute task-ends path or a bad name is an error and
// writes nothing.
func TestRecordEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "task-ends")
	if err := recordEnd(map[string]string{shieldbundle.AnnName: "p-t1"}, "0123456789abcdef"); err != nil {
		t.Fatalf("without the annotation: %v", err)
	}
	since := time.Now()
	if err := recordEnd(map[string]string{shieldbundle.AnnName: "p-t1", shieldbundle.AnnTaskEnds: dir}, "0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	e, gone := taskend.NewWatcher(dir, nil).Gone("p-t1", since)
	if !gone || e.Reason != taskend.ReasonExited || e.ID != "0123456789ab" {
		t.Fatalf("end %+v %v", e, gone)
	}
	for _, ann := range []map[string]string{
		{shieldbundle.AnnName: "p-t2", shieldbundle.AnnTaskEnds: "relative/task-ends"},
		{shieldbundle.AnnName: "p-t2", shieldbundle.AnnTaskEnds: filepath.Join(t.TempDir(), "elsewhere")},
		{shieldbundle.AnnName: "../x", shieldbundle.AnnTaskEnds: dir},
		{shieldbundle.AnnTaskEnds: dir},
	} {
		if err := recordEnd(ann, "x"); err == nil {
			t.Errorf("recordEnd(%v) accepted", ann)
		}
	}
	if _, gone := taskend.NewWatcher(dir, nil).Gone("p-t2", since); gone {
		t.Fatal("a refused record was written")
	}
}

// createRuntime's start record: the container's init (here this test
// process) holds the bound tokens; a bad directory is an error.
func TestConfirmStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "task-ends")
	if err := confirmStart(map[string]string{shieldbundle.AnnName: "p-t1"}, os.Getpid(), "x"); err != nil {
		t.Fatalf("without the annotation: %v", err)
	}
	if err := confirmStart(map[string]string{shieldbundle.AnnName: "p-t1", shieldbundle.AnnTaskEnds: dir}, os.Getpid(), "0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	st, err := taskend.ReadStart(dir, "p-t1")
	if err != nil || st.Phase != taskend.PhaseRunning || st.PID != os.Getpid() || st.ID != "0123456789ab" || st.PIDStart == 0 {
		t.Fatalf("start %+v %v", st, err)
	}
	if err := confirmStart(map[string]string{shieldbundle.AnnName: "p-t2", shieldbundle.AnnTaskEnds: "relative/task-ends"}, 1, "x"); err == nil {
		t.Fatal("a relative directory was accepted")
	}
}
