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
	tbl, err := routes.Parse([]byte(`{"up": {"upstream": "` + up.URL + `",
		"allow": [{"methods": ["GET"], "path": "/v1/models/**"}, {"methods": ["POST"], "path": "/v1/messages"}],
		"deny": [{"methods": ["*"], "path": "/v1/models/secret"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	p := New(Options{Store: memStore{cred: creddb.Credential{"type": "api_key", "key": "secret-k"}}, Routes: tbl})
	srv := httptest.NewServer(p)
	defer func() { srv.Close(); p.Close() }()
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
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.want {
			t.Errorf("%s %s: status %d, want %d (%s)", c.method, c.path, res.StatusCode, c.want, body)
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
