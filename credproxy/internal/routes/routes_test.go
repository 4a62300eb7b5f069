package routes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tbl, err := Parse([]byte(`{
  "claude": {"upstream": "https://api.anthropic.com/v1?x=1#f", "auth_header": "dynamic",
             "oauth_refresh": {"token_url": "https://example.invalid/v1/oauth/token", "client_id": "abc", "scope": "s"}},
  "gh":     {"upstream": "https://api.example.com", "auth_header": "Authorization", "auth_prefix": "token "},
  "glab":   {"upstream": "http://gitlab.example.com:8080", "auth_header": "PRIVATE-TOKEN", "auth_prefix": ""},
  "plain":  {"upstream": "HTTPS://Host.example", "auth_prefix": null, "unknown": [1, 2]}
}`))
	if err != nil {
		t.Fatal(err)
	}
	c := tbl["claude"]
	if c.Scheme != "https" || c.Host != "api.anthropic.com" || c.AuthHeader != "dynamic" || c.AuthPrefix != "Bearer " {
		t.Errorf("claude = %+v", c)
	}
	if c.Refresh == nil || c.Refresh.ClientID != "abc" || !c.Refresh.HasScope || c.Refresh.HasSecret {
		t.Errorf("claude refresh = %+v", c.Refresh)
	}
	if g := tbl["gh"]; g.AuthPrefix != "token " || g.Refresh != nil {
		t.Errorf("gh = %+v", g)
	}
	if g := tbl["glab"]; g.AuthPrefix != "" || g.AuthHeader != "PRIVATE-TOKEN" || g.Origin() != "http://gitlab.example.com:8080" {
		t.Errorf("glab = %+v", g)
	}
	if p := tbl["plain"]; p.AuthPrefix != "Bearer " || p.AuthHeader != "Authorization" || p.Scheme != "https" {
		t.Errorf("plain = %+v", p)
	}
	if got := strings.Join(tbl.Providers(), ","); got != "claude,gh,glab,plain" {
		t.Errorf("providers = %s", got)
	}
	empty, err := Parse([]byte("{}\n"))
	if err != nil || len(empty) != 0 {
		t.Errorf("empty = %v %v", empty, err)
	}
}

func TestParseRejects(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`{"claude": 5}`, "Route 'claude' is not a JSON object"},
		{`{"claude": {}}`, "Route 'claude' missing required 'upstream' field"},
		{`{"claude": {"upstream": 5}}`, "Route 'claude' is invalid"},
		{`{"a": {"upstream": "ftp://x"}}`, "Route 'a' 'upstream' must be an absolute http"},
		{`{"a": {"upstream": "/relative"}}`, "must be an absolute"},
		{`{"a": {"upstream": "https://user:pw@host"}}`, "without user info"},
		{`{"a": {"upstream": "https://"}}`, "must be an absolute"},
		{`{"a": {"upstream": "https://h", "auth_header": "Bad Header"}}`, "not a valid header name"},
		{`{"a": {"upstream": "https://h", "auth_header": ""}}`, "not a valid header name"},
		{`{"a": {"upstream": "https://h", "auth_header": "Host"}}`, "framing or hop-by-hop"},
		{`{"a": {"upstream": "https://h", "auth_header": "transfer-encoding"}}`, "framing or hop-by-hop"},
		{`{"a": {"upstream": "https://h", "auth_prefix": "x\r\ny"}}`, "line break"},
		{`{"a": {"upstream": "https://h", "oauth_refresh": 3}}`, "'oauth_refresh' must be an object"},
		{`{"a": {"upstream": "https://h", "oauth_refresh": {"client_id": "c"}}}`, "missing required 'token_url'"},
		{`{"a": {"upstream": "https://h", "oauth_refresh": {"token_url": "https://t"}}}`, "missing required 'client_id'"},
		{`{"a": {"upstream": "https://h", "oauth_refresh": {"token_url": "file:///x", "client_id": "c"}}}`, "token_url' must be an absolute"},
		{`{"": {"upstream": "https://h"}}`, "empty provider name"},
	} {
		_, err := Parse([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) = %v, want error containing %q", c.in, err, c.want)
		}
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "routes.json")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("missing file: %v", err)
	}
	_ = os.WriteFile(p, []byte(`{"claude": {}}`), 0o600)
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "Route 'claude' missing required 'upstream' field") {
		t.Errorf("invalid route: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"a": {"upstream": "https://h"}}`,
		`{"claude": {"upstream": "https://api.anthropic.com", "auth_header": "dynamic", "oauth_refresh": {"token_url": "https://t/x", "client_id": "c"}}}`,
		`{"a": {"upstream": "http://[::1]:80/p", "auth_prefix": null}}`, `[1]`, `{"a": null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, err := Parse(data)
		if err != nil {
			return
		}
		for name, r := range tbl {
			if r.Provider != name || (r.Scheme != "http" && r.Scheme != "https") || r.Host == "" {
				t.Fatalf("accepted route %q = %+v", name, r)
			}
			if strings.ContainsAny(r.AuthPrefix, "\r\n\x00") || !validHeaderName(r.AuthHeader) || reservedHeader(r.AuthHeader) {
				t.Fatalf("accepted unsafe header rule %+v", r)
			}
		}
	})
}

// Several bad routes: the error names the first by provider name every time.
func TestParseErrorIsStable(t *testing.T) {
	doc := []byte(`{"zeta":{"upstream":"ftp://x"},"alpha":{"upstream":"ftp://y"},"mid":{}}`)
	_, first := Parse(doc)
	if first == nil || !strings.Contains(first.Error(), "alpha") {
		t.Fatalf("error %v, want the first bad route by name (alpha)", first)
	}
	for i := 0; i < 100; i++ {
		if _, err := Parse(doc); err == nil || err.Error() != first.Error() {
			t.Fatalf("try %d: %v, first try gave %v", i, err, first)
		}
	}
}
