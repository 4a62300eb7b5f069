package refresh

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/logline"
	"terok.dev/sandbox/credproxy/internal/routes"
)

const schema = `CREATE TABLE IF NOT EXISTS credentials (
    credential_set TEXT NOT NULL, provider TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (credential_set, provider));
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token TEXT PRIMARY KEY, project TEXT NOT NULL, task TEXT NOT NULL,
    credential_set TEXT NOT NULL, provider TEXT NOT NULL);`

type fixture struct {
	raw  *sql.DB
	db   *creddb.DB
	logs *bytes.Buffer
	log  *slog.Logger
	now  time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cred", "credentials.db")
	db, err := creddb.Open(path) // the proxy's own way of opening it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	raw, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Exec(schema); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	f := &fixture{raw: raw, db: db, logs: &buf, now: time.Unix(1_800_000_000, 0)}
	f.log = slog.New(logline.New(&lockedWriter{w: &buf}, "terok-credential-proxy", slog.LevelDebug))
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (f *fixture) put(t *testing.T, set, provider, data string) {
	t.Helper()
	if _, err := f.raw.Exec(`INSERT OR REPLACE INTO credentials (credential_set, provider, data) VALUES (?, ?, ?)`, set, provider, data); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) get(t *testing.T, set, provider string) map[string]any {
	t.Helper()
	var data string
	if err := f.raw.QueryRow(`SELECT data FROM credentials WHERE credential_set = ? AND provider = ?`, set, provider).Scan(&data); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("stored data %q: %v", data, err)
	}
	return m
}

func (f *fixture) refresher(tbl routes.Table) *Refresher {
	return New(Options{Store: DBStore{DB: f.db}, Routes: tbl, Log: f.log, Now: func() time.Time { return f.now }})
}

// tokenEndpoint is a local OAuth token endpoint.
type tokenEndpoint struct {
	srv   *httptest.Server
	calls atomic.Int32
	mu    sync.Mutex
	got   []map[string]any
	reply func(w http.ResponseWriter, body map[string]any)
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	te := &tokenEndpoint{}
	te.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		te.calls.Add(1)
		var body map[string]any
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request shape", 400)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
		te.mu.Lock()
		te.got = append(te.got, body)
		te.mu.Unlock()
		te.reply(w, body)
	}))
	t.Cleanup(te.srv.Close)
	return te
}

func route(tokenURL string, scope bool) routes.Route {
	r := routes.Route{Provider: "claude", Scheme: "https", Host: "api.example.invalid",
		Refresh: &routes.OAuthRefresh{TokenURL: tokenURL, ClientID: "client-1"}}
	if scope {
		r.Refresh.Scope, r.Refresh.HasScope = "user:inference", true
		r.Refresh.ClientSecret, r.Refresh.HasSecret = "client-secret-1", true
	}
	return r
}

func TestExpiringCredentialRefreshedAndMembersKept(t *testing.T) {
	f := newFixture(t)
	te := newTokenEndpoint(t)
	te.reply = func(w http.ResponseWriter, body map[string]any) {
		_, _ = io.WriteString(w, `{"access_token": "AT-new-9f", "refresh_token": "RT-new-9f", "expires_in": 3600, "token_type": "bearer"}`)
	}
	exp := f.now.Unix() + 300 // inside the 600 s buffer
	f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-old-1", "refresh_token": "RT-old-1", "expires_at": `+itoa(exp)+`.5, "beta_header": "b1", "scopes": ["a", "b"], "subscription": {"tier": "max"}}`)
	f.put(t, "work", "claude", `{"type": "oauth", "access_token": "AT-work", "refresh_token": "RT-work"}`)
	f.put(t, "default", "fresh", `{"type": "oauth", "access_token": "AT-fresh", "refresh_token": "RT-fresh", "expires_at": `+itoa(f.now.Unix()+3600)+`}`)
	f.put(t, "default", "apikey", `{"type": "api_key", "key": "K"}`)
	f.put(t, "default", "legacy", `{"access_token": "AT-legacy", "refresh_token": "RT-legacy"}`)
	f.put(t, "default", "broken", `not json`)
	r := route(te.srv.URL+"/v1/oauth/token", true)
	fresh := route(te.srv.URL, false)
	fresh.Provider = "fresh"
	tbl := routes.Table{"claude": r, "fresh": fresh, "apikey": route(te.srv.URL, false), "legacy": route(te.srv.URL, false), "broken": route(te.srv.URL, false)}

	if err := f.refresher(tbl).Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := te.calls.Load(); n != 2 {
		t.Fatalf("token endpoint called %d times, want 2 (default/claude and work/claude)", n)
	}
	want := map[string]any{"grant_type": "refresh_token", "refresh_token": "RT-old-1", "client_id": "client-1", "scope": "user:inference", "client_secret": "client-secret-1"}
	te.mu.Lock()
	first := te.got[0]
	te.mu.Unlock()
	if len(first) != len(want) {
		t.Errorf("payload = %v", first)
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("payload %s = %v, want %v", k, first[k], v)
		}
	}
	got := f.get(t, "default", "claude")
	if got["access_token"] != "AT-new-9f" || got["refresh_token"] != "RT-new-9f" || got["type"] != "oauth" || got["beta_header"] != "b1" {
		t.Errorf("stored = %v", got)
	}
	if got["expires_at"] != json.Number(itoa(f.now.Unix()+3600)) {
		t.Errorf("expires_at = %v (%T)", got["expires_at"], got["expires_at"])
	}
	if sub, _ := got["subscription"].(map[string]any); sub["tier"] != "max" {
		t.Errorf("opaque member lost: %v", got)
	}
	if sc, _ := got["scopes"].([]any); len(sc) != 2 {
		t.Errorf("opaque member lost: %v", got)
	}
	if f.get(t, "work", "claude")["access_token"] != "AT-new-9f" {
		t.Error("credential of another set not refreshed")
	}
	if f.get(t, "default", "fresh")["access_token"] != "AT-fresh" {
		t.Error("credential with validity left was refreshed")
	}
	if f.get(t, "default", "legacy")["access_token"] != "AT-legacy" {
		t.Error("legacy row without type refreshed")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "Refreshed OAuth token for claude (expires in 3600s)") {
		t.Errorf("log:\n%s", logs)
	}
	if !strings.Contains(logs, "WARNING Skipping credential whose data is not a JSON object") || !strings.Contains(logs, "provider=broken") {
		t.Errorf("broken row not reported:\n%s", logs)
	}
	for _, s := range []string{"AT-new-9f", "RT-new-9f", "RT-old-1", "AT-old-1", "client-secret-1"} {
		if strings.Contains(logs, s) {
			t.Errorf("log contains secret %s", s)
		}
	}
}

func TestDefaultsWhenResponseOmitsFields(t *testing.T) {
	f := newFixture(t)
	te := newTokenEndpoint(t)
	te.reply = func(w http.ResponseWriter, _ map[string]any) { _, _ = io.WriteString(w, `{"access_token": "AT-2"}`) }
	f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-1", "refresh_token": "RT-1", "expires_at": null}`)
	if err := f.refresher(routes.Table{"claude": route(te.srv.URL, false)}).Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := f.get(t, "default", "claude")
	if got["access_token"] != "AT-2" || got["refresh_token"] != "RT-1" || got["expires_at"] != json.Number(itoa(f.now.Unix()+28800)) {
		t.Errorf("stored = %v", got)
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	if _, has := te.got[0]["scope"]; has {
		t.Error("scope sent though the route has none")
	}
}

func TestRefreshFailureLeavesCredentialIntact(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(w http.ResponseWriter)
		log   string
	}{
		{"http error", func(w http.ResponseWriter) { http.Error(w, `{"error":"invalid_grant","echo":"RT-keep-1"}`, 400) }, "Token refresh failed (400): "},
		{"no access token", func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"token_type":"bearer"}`) }, "Token refresh failed (200): response has no access_token"},
		{"not json", func(w http.ResponseWriter) { _, _ = io.WriteString(w, `<html>`) }, "Token refresh failed (200): response is not a JSON object"},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Location", "http://127.0.0.1:1/steal")
			w.WriteHeader(307)
		}, "Token refresh failed (307)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			te := newTokenEndpoint(t)
			te.reply = func(w http.ResponseWriter, _ map[string]any) { tc.reply(w) }
			const orig = `{"type": "oauth", "access_token": "AT-keep-1", "refresh_token": "RT-keep-1", "expires_at": 5}`
			f.put(t, "default", "claude", orig)
			f.put(t, "default", "other", orig)
			other := route(te.srv.URL, false)
			other.Provider = "other"
			if err := f.refresher(routes.Table{"claude": route(te.srv.URL, false), "other": other}).Pass(context.Background()); err != nil {
				t.Fatal(err)
			}
			if te.calls.Load() != 2 {
				t.Errorf("a failure stopped the pass: %d calls", te.calls.Load())
			}
			got := f.get(t, "default", "claude")
			if got["access_token"] != "AT-keep-1" || got["refresh_token"] != "RT-keep-1" || got["expires_at"] != json.Number("5") {
				t.Errorf("credential changed after a failed refresh: %v", got)
			}
			logs := f.logs.String()
			if !strings.Contains(logs, "ERROR "+tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs)
			}
			if strings.Contains(logs, "RT-keep-1") || strings.Contains(logs, "AT-keep-1") {
				t.Errorf("log contains a token:\n%s", logs)
			}
		})
	}
}

func TestConcurrentChangeIsNotOverwritten(t *testing.T) {
	f := newFixture(t)
	te := newTokenEndpoint(t)
	te.reply = func(w http.ResponseWriter, _ map[string]any) {
		// An operator logs in again while the refresh is in flight.
		f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-relogin", "refresh_token": "RT-relogin"}`)
		_, _ = io.WriteString(w, `{"access_token": "AT-from-refresh"}`)
	}
	f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-1", "refresh_token": "RT-1"}`)
	if err := f.refresher(routes.Table{"claude": route(te.srv.URL, false)}).Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, "default", "claude"); got["access_token"] != "AT-relogin" {
		t.Errorf("refresh overwrote a newer credential: %v", got)
	}
}

func TestOneRefreshAtATimePerCredential(t *testing.T) {
	f := newFixture(t)
	te := newTokenEndpoint(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	te.reply = func(w http.ResponseWriter, _ map[string]any) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, `{"access_token": "AT-2"}`)
	}
	f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-1", "refresh_token": "RT-1"}`)
	r := f.refresher(routes.Table{"claude": route(te.srv.URL, false)})
	done := make(chan error, 1)
	go func() { done <- r.Pass(context.Background()) }()
	<-entered
	if err := r.Pass(context.Background()); err != nil { // runs while the first is in flight
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := te.calls.Load(); n != 1 {
		t.Errorf("token endpoint called %d times for one credential", n)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	f := newFixture(t)
	te := newTokenEndpoint(t)
	passes := make(chan struct{}, 10)
	te.reply = func(w http.ResponseWriter, _ map[string]any) {
		passes <- struct{}{}
		http.Error(w, "nope", 500)
	}
	f.put(t, "default", "claude", `{"type": "oauth", "access_token": "AT-1", "refresh_token": "RT-1"}`)
	r := New(Options{Store: DBStore{DB: f.db}, Routes: routes.Table{"claude": route(te.srv.URL, false)}, Log: f.log, Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { r.Run(ctx); close(stopped) }()
	<-passes // the immediate pass
	<-passes // a pass after the interval: failures do not stop the loop
	cancel()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestSafeSnippet(t *testing.T) {
	long := strings.Repeat("é", 300)
	s := safeSnippet([]byte(long), nil)
	if len(s) > maxLoggedBody+4 || !strings.HasSuffix(s, "…") {
		t.Errorf("snippet %d bytes", len(s))
	}
	if got := safeSnippet([]byte("x SECRET-TOKEN y"), []string{"SECRET-TOKEN", ""}); got != "x [redacted] y" {
		t.Errorf("redaction: %q", got)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
