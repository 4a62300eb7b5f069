package proxy

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// BenchmarkProxyScope: proxy throughput with no scope vs a 20-rule route
// scope vs the same route scope plus a 20-rule token scope (token_scope;
// the request matches the last allow rule of each), in one run so the
// figures compare (goal: scoped >= 0.95x of unscoped).
func BenchmarkProxyScope(b *testing.B) {
	var allow []scope.Rule
	for i := 0; i < 19; i++ {
		allow = append(allow, scope.Rule{Methods: []string{"GET"}, Path: fmt.Sprintf("/repos/acme/r%d/**", i)})
	}
	allow = append(allow, scope.Rule{Methods: []string{"GET", "POST"}, Path: "/v1/*"})
	sc, err := scope.New(allow, nil)
	if err != nil {
		b.Fatal(err)
	}
	tokenRules, err := json.Marshal(allow)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		s     scope.Scope
		token bool // the token carries the same 20 rules (token_scope)
	}{{"none", scope.Scope{}, false}, {"20rules", sc, false}, {"20rules+token20rules", sc, true}} {
		b.Run(c.name, func(b *testing.B) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, `{"ok":true}`)
			}))
			b.Cleanup(up.Close)
			db := benchDB(b)
			if c.token {
				raw, err := sql.Open("sqlite3", db.Path())
				if err != nil {
					b.Fatal(err)
				}
				_, err = raw.Exec(`INSERT INTO token_scope (token, allow, deny) VALUES (?, ?, '[]')`, benchToken, string(tokenRules))
				raw.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			u, _ := url.Parse(up.URL)
			res := db.NewResolver()
			b.Cleanup(func() { res.Close() })
			p := New(Options{Store: benchStore{res, db}, DBConcurrency: -1, Routes: routes.Table{"bench": {
				Provider: "bench", Scheme: "http", Host: u.Host, AuthHeader: "dynamic", Scope: c.s}}})
			b.Cleanup(p.Close)
			srv := httptest.NewServer(p)
			b.Cleanup(srv.Close)
			benchGet(b, srv.URL, true)
		})
	}
}
