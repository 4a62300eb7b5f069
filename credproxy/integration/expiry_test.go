package integration

import (
	"net/http"
	"testing"
	"time"
)

// TestTokenExpiry: the real binary refuses a phantom token whose
// token_expiry stamp has passed like a revoked one (401, not forwarded),
// also one it resolved (and cached) while it was live, with no write to the
// database in between (docs/formats.md, Credentials database).
func TestTokenExpiry(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("exp", `{"upstream": "`+up.origin()+`"}`))
	e.cred("default", "exp", `{"type": "api_key", "key": "`+e.secret("REAL-exp-feed")+`"}`)
	live, dead, soon := e.token(tok(401), "default", "exp"), e.token(tok(402), "default", "exp"), e.token(tok(403), "default", "exp")
	e.start() // creates token_expiry
	now := time.Now()
	e.exec(`INSERT INTO token_expiry (token, expires_at) VALUES (?, ?), (?, ?), (?, ?)`,
		live, now.Add(time.Hour).Unix(), dead, now.Add(-time.Minute).Unix(), soon, now.Add(2*time.Second).Unix())
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
		t.Fatalf("token before its expiry: %d", c)
	}
	time.Sleep(time.Until(time.Unix(now.Add(2*time.Second).Unix(), 0).Add(200 * time.Millisecond)))
	if c := get(soon); c != http.StatusUnauthorized {
		t.Fatalf("token after its expiry: %d", c)
	}
	e.checkNoSecrets()
}
