package proxy

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

const benchToken = "terok-p-0123456789abcdef0123456789abcdef"

// benchSetup is a real database (raw SQL rows), a local upstream and the
// proxy behind an httptest server.
func benchSetup(b testing.TB) (proxyURL string, direct string) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"msg_01","type":"message","content":[{"type":"text","text":"ok"}]}`)
	}))
	b.Cleanup(up.Close)
	db := benchDB(b)
	u, _ := url.Parse(up.URL)
	res := db.NewResolver()
	b.Cleanup(func() { res.Close() })
	p := New(Options{Store: benchStore{res, db}, DBConcurrency: -1, Routes: routes.Table{"bench": {Provider: "bench", Scheme: "http", Host: u.Host, AuthHeader: "dynamic"}}})
	b.Cleanup(p.Close)
	srv := httptest.NewServer(p)
	b.Cleanup(srv.Close)
	return srv.URL, up.URL
}

// benchStore is the server's store: lookups through the Resolver.
type benchStore struct {
	*creddb.Resolver
	db *creddb.DB
}

func (s benchStore) LoadCredential(ctx context.Context, key creddb.CredentialKey) (creddb.Credential, error) {
	return s.db.LoadCredential(ctx, key)
}

func benchGet(b *testing.B, target string, auth bool) {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(16) // 32 concurrent clients on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequestWithContext(context.Background(), "GET", target+"/v1/messages", nil)
			if auth {
				req.Header.Set("Authorization", "Bearer "+benchToken)
			}
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}

// BenchmarkProxySmallJSON: phantom token lookup, credential load,
// injection and forwarding of a small JSON response, in process.
func BenchmarkProxySmallJSON(b *testing.B) {
	p, _ := benchSetup(b)
	benchGet(b, p, true)
}

// BenchmarkBareSmallJSON is a bare httputil.ReverseProxy with the same
// transport in front of the same upstream: the floor of the proxy.
func BenchmarkBareSmallJSON(b *testing.B) {
	_, d := benchSetup(b)
	u, _ := url.Parse(d)
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = "" },
		Transport:  NewTransport(DefaultConnectTimeout, DefaultIdleConnTimeout),
		BufferPool: newBufferPool(), // as the proxy: the difference is lookup and rewriting
	}
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	benchGet(b, srv.URL, false)
}

// BenchmarkDirectSmallJSON is the same client against the upstream.
func BenchmarkDirectSmallJSON(b *testing.B) {
	_, d := benchSetup(b)
	benchGet(b, d, false)
}

// BenchmarkLookup is the database part of a request: token and credential.
func BenchmarkLookup(b *testing.B) {
	db := benchDB(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = context.WithoutCancel(ctx) // as the proxy calls it
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, c, err := db.Resolve(ctx, benchToken); err != nil || c == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupResolver is the lookup as the server makes it: through
// the Resolver (data_version check, then the cached answer).
func BenchmarkLookupResolver(b *testing.B) {
	db := benchDB(b)
	res := db.NewResolver()
	defer res.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, c, err := res.Resolve(ctx, benchToken); err != nil || c == nil {
			b.Fatal(err)
		}
	}
}

// benchDB is a credentials DB holding benchToken and its credential,
// written with raw SQL as another process would.
func benchDB(b testing.TB) *creddb.DB {
	path := filepath.Join(b.TempDir(), "c.db")
	db, err := creddb.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	for _, q := range []string{
		`INSERT INTO credentials VALUES ('default', 'bench', '{"type": "api_key", "key": "bench-secret"}')`,
		`INSERT INTO proxy_tokens VALUES ('` + benchToken + `', 'p', 't', 'default', 'bench')`,
	} {
		if _, err := raw.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	return db
}
