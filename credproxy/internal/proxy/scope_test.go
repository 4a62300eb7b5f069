package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// TestScopeRefusesOutside: a scoped route forwards only allowed requests;
// the others get 403 JSON naming route, method and path, never the
// credential, and never reach the upstream.
func TestScopeRefusesOutside(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	srv := newScopedProxy(t, up.URL, `
		"allow": [{"methods": ["GET"], "path": "/v1/models/**"}, {"methods": ["POST"], "path": "/v1/messages"}],
		"deny": [{"methods": ["*"], "path": "/v1/models/secret"}]`)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/models", 200},
		{"GET", "/v1/models/a/b", 200},
		{"POST", "/v1/messages", 200},
		{"DELETE", "/v1/messages", 403},
		{"GET", "/v1/models/secret", 403},
		{"GET", "/v1/models/%2e%2e/admin", 403},
		{"GET", "/v1/models/a%2fb", 403},
		{"GET", "/admin", 403},
	} {
		before := hits.Load()
		status, body := scopedCall(t, srv, c.method, c.path, "", "")
		if status != c.want {
			t.Errorf("%s %s: status %d, want %d (%s)", c.method, c.path, status, c.want, body)
			continue
		}
		if c.want != 403 {
			continue
		}
		if hits.Load() != before {
			t.Errorf("%s %s: refused request reached the upstream", c.method, c.path)
		}
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil || m["error"] != "scope" || m["route"] != "up" || m["method"] != c.method || m["path"] == "" {
			t.Errorf("%s %s: body %q", c.method, c.path, body)
		}
		if strings.Contains(string(body), "secret-k") {
			t.Errorf("credential in 403 body")
		}
	}
}

// newScopedProxy is a proxy whose one route "up" leads to upstream with
// the scope members given (JSON, without braces); the token "tok".
func newScopedProxy(t *testing.T, upstream, scopeJSON string) *httptest.Server {
	t.Helper()
	tbl, err := routes.Parse([]byte(`{"up": {"upstream": "` + upstream + `",` + scopeJSON + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := New(Options{Store: memStore{cred: creddb.Credential{"type": "api_key", "key": "secret-k"}}, Routes: tbl})
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.Close(); p.Close() })
	return srv
}

// scopedCall sends method path with the token "tok" and, when name is
// not empty, the header name: value spelled exactly so.
func scopedCall(t *testing.T, srv *httptest.Server, method, path, name, value string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer tok")
	if name != "" {
		req.Header[name] = []string{value}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res.StatusCode, body
}

func TestRoutesRejectMalformedScope(t *testing.T) {
	for _, js := range []string{
		`{"up": {"upstream": "http://127.0.0.1:1", "allow": [{"methods": ["get"], "path": "/x"}]}}`,
		`{"up": {"upstream": "http://127.0.0.1:1", "deny": [{"methods": ["GET"], "path": "x"}]}}`,
		`{"up": {"upstream": "http://127.0.0.1:1", "allow": "GET /x"}}`,
	} {
		if _, err := routes.Parse([]byte(js)); err == nil {
			t.Errorf("accepted %s", js)
		}
	}
}

// overrideUpstream acts like the many servers that take a method case-
// insensitively (ASP.NET Core, Werkzeug) and honour the method- and
// path-override headers (Rack::MethodOverride, Google's front ends, IIS
// and older Symfony for X-Original-URL / X-Rewrite-URL): it reports the
// request it would act on.
func overrideUpstream(t *testing.T, acted *atomic.Value) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, p := strings.ToUpper(r.Method), r.URL.Path
		for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
			if v := r.Header.Get(h); v != "" {
				m = strings.ToUpper(v)
			}
		}
		for _, h := range []string{"X-Original-Url", "X-Rewrite-Url"} {
			if v := r.Header.Get(h); v != "" {
				p = v
			}
		}
		acted.Store(m + " " + p)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	return up
}

// TestScopeOverridesRefused: a deny rule on DELETE or on a path holds
// against the request forms that upstreams read as that method or path
// although the proxy's matcher saw another (docs/credential-proxy.md,
// Scopes): a lower-case method, the method-override headers and the
// path-override headers. A request whose every reading is in scope still
// goes through.
func TestScopeOverridesRefused(t *testing.T) {
	var acted atomic.Value
	up := overrideUpstream(t, &acted)
	srv := newScopedProxy(t, up.URL, `
		"deny": [{"methods": ["DELETE"], "path": "/v1/**"}, {"methods": ["*"], "path": "/admin/**"}]`)
	for _, c := range []struct {
		method, path string
		header       [2]string
		want         int
	}{
		{"GET", "/v1/x", [2]string{}, 200},
		{"POST", "/v1/x", [2]string{}, 200},
		{"POST", "/v1/x", [2]string{"X-HTTP-Method-Override", "PUT"}, 200},
		{"GET", "/v1/x", [2]string{"X-Original-URL", "/v1/y?q=1"}, 200},
		{"DELETE", "/v1/x", [2]string{}, 403},
		{"delete", "/v1/x", [2]string{}, 403},
		{"Delete", "/v1/x", [2]string{}, 403},
		{"POST", "/v1/x", [2]string{"X-HTTP-Method-Override", "DELETE"}, 403},
		{"POST", "/v1/x", [2]string{"x-http-method-override", "delete"}, 403},
		{"POST", "/v1/x", [2]string{"X-HTTP-Method", "DELETE"}, 403},
		{"POST", "/v1/x", [2]string{"X-Method-Override", "DELETE"}, 403},
		{"GET", "/v1/x", [2]string{"X-Original-URL", "/admin/keys"}, 403},
		{"GET", "/v1/x", [2]string{"X-Rewrite-URL", "/admin/keys"}, 403},
		{"GET", "/v1/x", [2]string{"X-Original-URL", "/v1/../admin/keys"}, 403},
		{"GET", "/v1/x", [2]string{"X-Original-URL", "http://up/admin/keys"}, 403},
	} {
		acted.Store("")
		status, body := scopedCall(t, srv, c.method, c.path, c.header[0], c.header[1])
		if status != c.want {
			t.Errorf("%s %s %v: status %d, want %d (%s); the upstream acted on %q", c.method, c.path, c.header, status, c.want, body, acted.Load())
			continue
		}
		if got := acted.Load().(string); c.want == 403 && got != "" {
			t.Errorf("%s %s %v: refused, but the upstream acted on %q", c.method, c.path, c.header, got)
		}
	}
}
