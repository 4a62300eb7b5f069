package integration

import (
	"net/http"
	"testing"
	"time"
)

// TestTokenExpiry: the real binary refuses a phantom token whose
// token_expiry stamp has passed like a revoked one (401, not forwarded),
// also one it resolved (and cached) while it was live, with no write to the
// database in between (docs/formats.md, Credentials database). Its audit
// records say reason expired, with the project and task of a token that
// resolved while it was live (docs/audit.md, Channel proxy).
//
// The soon token must be served once before its stamp (whole seconds)
// passes; under load a short margin can run out first, so an attempt that
// ran past the stamp before that request says nothing and is made again
// in a fresh environment with twice the margin (the margin is a liveness
// bound; the refusal after the stamp is checked every time).
func TestTokenExpiry(t *testing.T) {
	for margin := 2 * time.Second; !tokenExpiry(t, margin); margin *= 2 {
		if margin >= 32*time.Second {
			t.Fatalf("the live requests never finished within %s", margin)
		}
		t.Logf("the live requests outlasted the soon token (%s); again with %s", margin, 2*margin)
	}
}

// tokenExpiry is one attempt of TestTokenExpiry with the soon token living
// at least margin; false when its live request could not be made in time.
func tokenExpiry(t *testing.T, margin time.Duration) bool {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("exp", `{"upstream": "`+up.origin()+`"}`))
	e.cred("default", "exp", `{"type": "api_key", "key": "`+e.secret("REAL-exp-feed")+`"}`)
	live, dead, soon := e.token(tok(401), "default", "exp"), e.token(tok(402), "default", "exp"), e.token(tok(403), "default", "exp")
	e.start() // creates token_expiry
	now := time.Now()
	soonAt := time.Unix(now.Add(margin+time.Second).Unix(), 0) // whole seconds, at least margin away
	e.exec(`INSERT INTO token_expiry (token, expires_at) VALUES (?, ?), (?, ?), (?, ?)`,
		live, now.Add(time.Hour).Unix(), dead, now.Add(-time.Minute).Unix(), soon, soonAt.Unix())
	get := func(tk string) int {
		code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tk)
		return code
	}
	if c := get(live); c != http.StatusOK {
		t.Fatalf("live token: %d", c)
	}
	before := up.count()
	if c := get(dead); c != http.StatusUnauthorized || up.count() != before {
		t.Fatalf("expired token: %d, forwarded %v", c, up.count() != before)
	}
	if c := get(soon); c != http.StatusOK {
		if !time.Now().Before(soonAt) {
			e.stop()
			return false
		}
		t.Fatalf("token before its expiry: %d", c)
	}
	time.Sleep(time.Until(soonAt.Add(200 * time.Millisecond)))
	if c := get(soon); c != http.StatusUnauthorized {
		t.Fatalf("token after its expiry: %d", c)
	}
	e.stop() // a clean shutdown flushes the audit queue
	recs := e.auditRecords(e.auditFile)
	want := []struct {
		tk, outcome, reason, project string
		status                       float64
	}{
		{live, "ok", "", "proj", 200},
		{dead, "refused", "expired", "", 401},
		{soon, "ok", "", "proj", 200},
		{soon, "refused", "expired", "proj", 401},
	}
	if len(recs) != len(want) {
		for _, r := range recs {
			t.Logf("%+v", r)
		}
		t.Fatalf("%d audit records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		r := recs[i]
		if r.TokenPrefix != w.tk[:12] || r.Outcome != w.outcome || r.Reason != w.reason || r.Project != w.project || r.Fields["status"] != w.status {
			t.Errorf("record %d: token %q outcome %q reason %q project %q status %v; want %q %q %q %q %v",
				i, r.TokenPrefix, r.Outcome, r.Reason, r.Project, r.Fields["status"], w.tk[:12], w.outcome, w.reason, w.project, w.status)
		}
	}
	if r := recs[3]; r.Task != "task1" || r.Fields["provider"] != "exp" {
		t.Errorf("expired record lacks what the token stood for: %+v", r)
	}
	e.checkNoSecrets()
	return true
}
