package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// BenchmarkProxyScope: proxy throughput with no scope vs a 20-rule scope
// (the request matches the last allow rule), in one run so the two figures
// compare (goal: scoped >= 0.95x of unscoped).
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
	for _, c := range []struct {
		name string
		s    scope.Scope
	}{{"none", scope.Scope{}}, {"20rules", sc}} {
		b.Run(c.name, func(b *testing.B) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, `{"ok":true}`)
			}))
			b.Cleanup(up.Close)
			db := benchDB(b)
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
