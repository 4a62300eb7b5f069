package integration

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"terok.dev/sandbox/common/taskend"
)

// TestTokenDiesWithContainer: the real binary refuses a phantom token bound
// to a container (token_binding) once that container's end is recorded in
// <state_dir>/task-ends, also after it resolved (and was cached) while the
// container ran, with no write to the database: 401, not forwarded, audited
// reason task-gone with the project and task. An unbound token of the same
// credential keeps working (docs/security-model.md, Tokens that die with
// their task; docs/audit.md, Channel proxy).
func TestTokenDiesWithContainer(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("tg", `{"upstream": "`+up.origin()+`"}`))
	e.cred("default", "tg", `{"type": "api_key", "key": "`+e.secret("REAL-tg-feed")+`"}`)
	bound, free := e.token(tok(501), "default", "tg"), e.token(tok(502), "default", "tg")
	e.start() // creates token_binding
	e.exec(`INSERT INTO token_binding (token, container, bound_at) VALUES (?, ?, ?)`, bound, "proj-task1", time.Now().UnixNano())
	get := func(tk string) int {
		code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tk)
		return code
	}
	if c := get(bound); c != http.StatusOK {
		t.Fatalf("bound token of a running container: %d", c)
	}
	if err := taskend.Record(filepath.Join(e.dir, "state", "task-ends"), taskend.End{Container: "proj-task1", Reason: taskend.ReasonStopped}); err != nil {
		t.Fatal(err)
	}
	before := up.count()
	if c := get(bound); c != http.StatusUnauthorized || up.count() != before {
		t.Fatalf("token of an ended container: %d, forwarded %v", c, up.count() != before)
	}
	if c := get(free); c != http.StatusOK {
		t.Fatalf("unbound token: %d", c)
	}
	e.stop()
	recs := e.auditRecords(e.auditFile)
	if len(recs) != 3 {
		t.Fatalf("%d audit records, want 3: %+v", len(recs), recs)
	}
	if r := recs[1]; r.Outcome != "refused" || r.Reason != "task-gone" || r.Project != "proj" || r.Task != "task1" || r.Fields["status"] != float64(401) || r.Fields["task_end"] != "stopped" {
		t.Errorf("refusal record: %+v", r)
	}
	if recs[0].Outcome != "ok" || recs[2].Outcome != "ok" {
		t.Errorf("records: %+v", recs)
	}
	e.checkNoSecrets()
}
