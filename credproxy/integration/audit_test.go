package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
)

// auditRecords reads the env's audit file; a line that does not parse
// fails the test.
func (e *env) auditRecords(path string) []audit.Record {
	e.t.Helper()
	recs, err := audit.ReadFile(path, func(msg string) { e.t.Errorf("corrupt audit line: %s", msg) })
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// TestAuditRecords: the real binary, its default audit file (under
// TEROK_SANDBOX_STATE_DIR), curl and Go's client against a local upstream.
// One record per request with the documented members, refusals with their
// reason (unknown token, revoked, no route, scope), a masked path, the query
// dropped, a streamed response recorded at its end with its byte count, a
// client that went away recorded as client-gone; no secret in any file.
func TestAuditRecords(t *testing.T) {
	up := newUpstream(t)
	const streamed = 3 << 20
	gone := make(chan struct{})
	up.handler = func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/stream"):
			w.Header().Set("Content-Type", "application/octet-stream")
			buf := make([]byte, 64<<10)
			for n := 0; n < streamed; n += len(buf) {
				if _, err := w.Write(buf); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		case strings.HasPrefix(r.URL.Path, "/v1/hang"):
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: 1\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			close(gone)
		default:
			w.WriteHeader(201)
			fmt.Fprint(w, `{"ok":true}`)
		}
	}
	e := newEnv(t, routesJSON(
		"api", fmt.Sprintf(`{"upstream": %q, "mask": ["/v1/files/{}/content"], "future_member": 1}`, up.origin()),
		"scoped", fmt.Sprintf(`{"upstream": %q, "allow": [{"methods": ["GET"], "path": "/v1/models/**"}]}`, up.origin())))
	e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-audit-key-7f3a")+`"}`)
	e.cred("default", "scoped", `{"type": "api_key", "key": "`+e.secret("REAL-audit-scoped-9b")+`"}`)
	e.cred("default", "gone", `{"type": "api_key", "key": "`+e.secret("REAL-audit-noroute-1")+`"}`)
	tkAPI := e.token(tok(700), "default", "api")
	tkScoped := e.token(tok(701), "default", "scoped")
	tkNoRoute := e.token(tok(702), "default", "gone")
	tkRevoked := e.token(tok(703), "default", "api")
	e.secret("query-secret-c4fe") // a client may put anything in a query
	e.start()

	curl := func(args ...string) string {
		out, err := exec.Command("curl", append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code}"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v %s", args, err, out)
		}
		return string(out)
	}
	auth := func(tk string) string { return "Authorization: Bearer " + tk }
	steps := []struct{ name, code string }{
		{"ok", curl("-H", auth(tkAPI), "-d", "0123456789", e.url("/v1/messages?api_key=query-secret-c4fe"))},
		{"masked", curl("-H", auth(tkAPI), e.url("/v1/files/file-XYZ123/content"))},
		{"unknown", curl("-H", auth(tok(799)), e.url("/v1/messages"))},
		{"missing", curl(e.url("/v1/messages"))},
		{"revoked-before", curl("-H", auth(tkRevoked), e.url("/v1/messages"))},
	}
	e.exec(`DELETE FROM proxy_tokens WHERE token = ?`, tkRevoked)
	steps = append(steps,
		struct{ name, code string }{"revoked", curl("-H", auth(tkRevoked), e.url("/v1/messages"))},
		struct{ name, code string }{"no-route", curl("-H", auth(tkNoRoute), e.url("/v1/messages"))},
		struct{ name, code string }{"scope", curl("-H", auth(tkScoped), "-X", "DELETE", e.url("/v1/models/x"))},
		struct{ name, code string }{"stream", curl("-H", auth(tkAPI), e.url("/v1/stream"))},
	)
	want := map[string]string{"ok": "201", "masked": "201", "unknown": "401", "missing": "401", "revoked-before": "201",
		"revoked": "401", "no-route": "404", "scope": "403", "stream": "200"}
	for _, s := range steps {
		if s.code != want[s.name] {
			t.Errorf("%s: status %s, want %s", s.name, s.code, want[s.name])
		}
	}
	// A client that goes away in the middle of a streamed response.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url("/v1/hang"), nil)
	req.Header.Set("Authorization", "Bearer "+tkAPI)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if line != "data: 1\n" {
		t.Errorf("first event %q", line)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("upstream never saw the client go away")
	}
	e.stop() // a clean shutdown flushes the queue

	recs := e.auditRecords(e.auditFile)
	if len(recs) != len(steps)+1 {
		for _, r := range recs {
			t.Logf("%+v", r)
		}
		t.Fatalf("%d records for %d requests", len(recs), len(steps)+1)
	}
	byName := map[string]audit.Record{}
	for i, s := range steps {
		byName[s.name] = recs[i]
	}
	byName["gone"] = recs[len(recs)-1]
	for name, r := range byName {
		if r.V != 1 || r.Channel != "proxy" || r.Event != "request" || r.Time.IsZero() {
			t.Errorf("%s: common members %+v", name, r)
		}
		for _, m := range []string{"method", "path", "status", "req_bytes", "resp_bytes", "duration_ms"} {
			if _, ok := r.Fields[m]; !ok {
				t.Errorf("%s: no member %s: %+v", name, m, r.Fields)
			}
		}
	}
	check := func(name, outcome, reason, project, path string, status float64) {
		t.Helper()
		r := byName[name]
		if r.Outcome != outcome || r.Reason != reason || r.Project != project || r.Fields["path"] != path || r.Fields["status"] != status {
			t.Errorf("%s: outcome %q reason %q project %q path %v status %v; want %q %q %q %q %v (%+v)",
				name, r.Outcome, r.Reason, r.Project, r.Fields["path"], r.Fields["status"], outcome, reason, project, path, status, r)
		}
	}
	check("ok", "ok", "", "proj", "/v1/messages", 201)
	check("masked", "ok", "", "proj", "/v1/files/{}/content", 201)
	// Before the token names a route, a path is hidden whole while any
	// route masks paths (docs/credential-proxy.md, Audit records).
	check("unknown", "refused", "unknown-token", "", "{}", 401)
	check("missing", "refused", "missing-token", "", "{}", 401)
	check("revoked", "refused", "revoked", "proj", "/v1/messages", 401)
	check("no-route", "refused", "no-route", "proj", "{}", 404)
	check("scope", "refused", "scope", "proj", "/v1/models/x", 403)
	check("stream", "ok", "", "proj", "/v1/stream", 200)
	if r := byName["gone"]; r.Outcome != "error" || r.Reason != "client-gone" || r.Fields["resp_bytes"] != float64(len("data: 1\n\n")) {
		t.Errorf("client gone: %+v", r)
	}
	ok := byName["ok"]
	if ok.Task != "task1" || ok.TokenPrefix != tkAPI[:12] || ok.Fields["provider"] != "api" || ok.Fields["credential_set"] != "default" ||
		ok.Fields["method"] != "POST" || ok.Fields["host"] != strings.TrimPrefix(up.origin(), "http://") ||
		ok.Fields["req_bytes"] != float64(10) || ok.Fields["resp_bytes"] != float64(len(`{"ok":true}`)) ||
		ok.Fields["oauth_refresh"] != false {
		t.Errorf("ok record: %+v", ok)
	}
	if r := byName["stream"]; r.Fields["resp_bytes"] != float64(streamed) {
		t.Errorf("streamed response recorded with %v bytes, want %d", r.Fields["resp_bytes"], streamed)
	}
	if r := byName["unknown"]; r.TokenPrefix != tok(799)[:12] || r.Fields["provider"] != nil {
		t.Errorf("unknown token record: %+v", r)
	}
	if r := byName["revoked"]; r.Task != "task1" || r.Fields["provider"] != "api" {
		t.Errorf("revoked record lacks what the token stood for: %+v", r)
	}
	if st, err := os.Stat(e.auditFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode: %v %v", st, err)
	}
	b, _ := os.ReadFile(e.auditFile)
	for _, s := range []string{tkAPI, "Bearer", "api_key="} {
		if strings.Contains(string(b), s) {
			t.Errorf("audit file holds %q", s)
		}
	}
	e.checkNoSecrets()
}

// TestAuditOff: --audit-file=off and audit = false in config.toml write no
// record; an explicit path is used as given.
func TestAuditOff(t *testing.T) {
	up := newUpstream(t)
	for _, c := range []struct {
		name   string
		args   []string
		config string
		file   func(e *env) string
		want   bool
	}{
		{"flag off", []string{"--audit-file=off"}, "", func(e *env) string { return e.auditFile }, false},
		{"config off", nil, "audit = false\n", func(e *env) string { return e.auditFile }, false},
		{"explicit path", nil, "", func(e *env) string { return filepath.Join(e.dir, "elsewhere", "a.jsonl") }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, routesJSON("api", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
			e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-off-key")+`"}`)
			tk := e.token(tok(710), "default", "api")
			if c.config != "" {
				if err := os.MkdirAll(filepath.Join(e.dir, "config"), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(e.dir, "config", "config.toml"), []byte(c.config), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := c.args
			if c.name == "explicit path" {
				args = []string{"--audit-file=" + c.file(e)}
			}
			e.start(args...)
			if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tk); code != 200 {
				t.Fatalf("status %d", code)
			}
			e.stop()
			_, err := os.Stat(c.file(e))
			if c.want {
				if recs := e.auditRecords(c.file(e)); len(recs) != 1 {
					t.Errorf("%d records", len(recs))
				}
			} else if err == nil {
				b, _ := os.ReadFile(c.file(e))
				t.Errorf("audit file written with audit off: %s", b)
			}
			if c.name == "explicit path" {
				if _, err := os.Stat(e.auditFile); err == nil {
					t.Errorf("default audit file written although --audit-file named another")
				}
			}
		})
	}
	if code, out := runProxy(t, "--socket-path=/tmp/x.sock", "--db-path=/tmp/x.db", "--routes-file=/tmp/r.json", "--audit-file=rel.jsonl"); code != 2 ||
		!strings.Contains(out, "--audit-file must be an absolute path or off") {
		t.Errorf("relative --audit-file: %d %q", code, out)
	}
}

// TestLogFormats: --log-format=json writes one JSON object per line with
// the shared field names; an unknown format is a usage error.
func TestLogFormats(t *testing.T) {
	e := newEnv(t, "{}\n")
	e.start("--log-format=json")
	if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tok(730)); code != 401 {
		t.Fatalf("status %d", code)
	}
	e.stop()
	lines := strings.Split(strings.TrimSpace(e.log()), "\n")
	sawToken := false
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		if m["logger"] != "terok-credential-proxy" || m["level"] == nil || m["msg"] == nil || m["time"] == nil {
			t.Errorf("members: %v", m)
		}
		if m["token_prefix"] != nil {
			sawToken = true
		}
	}
	if !sawToken {
		t.Errorf("no token_prefix field in the DEBUG refusal line:\n%s", e.log())
	}
	if code, out := runProxy(t, "--socket-path=/tmp/x.sock", "--db-path=/tmp/x.db", "--routes-file=/tmp/r.json", "--log-format=xml"); code != 2 ||
		!strings.Contains(out, "--log-format") {
		t.Errorf("--log-format=xml: %d %q", code, out)
	}
}
