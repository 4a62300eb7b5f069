package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// memStore is a one-token store for the in-process tests of the request
// path; the binary's tests use the real database.
type memStore struct{ cred creddb.Credential }

func (m memStore) Resolve(_ context.Context, tok string) (creddb.TokenInfo, creddb.Credential, error) {
	if tok != "tok" {
		return creddb.TokenInfo{}, nil, creddb.ErrNotFound
	}
	return creddb.TokenInfo{Project: "p", Task: "t", CredentialSet: "default", Provider: "up"}, m.cred, nil
}

func (m memStore) LoadCredential(context.Context, creddb.CredentialKey) (creddb.Credential, error) {
	return m.cred, nil
}

func newProxy(t testing.TB, upstream string, o Options) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(upstream)
	o.Store = memStore{cred: creddb.Credential{"type": "api_key", "key": "secret-k"}}
	o.Routes = routes.Table{"up": {Provider: "up", Scheme: u.Scheme, Host: u.Host, AuthHeader: "Authorization", AuthPrefix: "Bearer "}}
	p := New(o)
	srv := httptest.NewServer(p)
	t.Cleanup(func() { srv.Close(); p.Close() })
	return srv
}

func TestStreamedBodyOverCap(t *testing.T) {
	// Bytes the upstream read, per case: the upstream of an over-cap case
	// may still be reading when the next case starts.
	var got sync.Map
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(r.URL.Path, n)
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	srv := newProxy(t, up.URL, Options{MaxBody: 1000})
	for i, c := range []struct {
		n       int
		chunked bool
		want    int
	}{{1000, true, 200}, {1001, true, 413}, {5000, true, 413}, {1000, false, 200}, {1001, false, 413}} {
		body := io.Reader(strings.NewReader(strings.Repeat("b", c.n)))
		if c.chunked {
			body = io.MultiReader(body) // unknown length: chunked
		}
		path := fmt.Sprintf("/u%d", i)
		req, _ := http.NewRequest("POST", srv.URL+path, body)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%d bytes: %v", c.n, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want == 413 && string(b) != "Request body too large") {
			t.Errorf("%d bytes chunked=%v: %d %q", c.n, c.chunked, resp.StatusCode, b)
		}
		if n, _ := got.Load(path); c.want == 200 && n != int64(c.n) {
			t.Errorf("upstream got %v bytes", n)
		}
	}
}

func TestLocationRewrite(t *testing.T) {
	r := routes.Route{Scheme: "https", Host: "api.example.com"}
	for in, want := range map[string]string{
		"/v1/next?page=2":                        "/v1/next?page=2",
		"next":                                   "next",
		"https://api.example.com/v1/x?y=1":       "/v1/x?y=1",
		"https://API.example.com":                "/",
		"https://evil.example/v1":                "",
		"http://api.example.com/v1":              "",
		"//evil.example/x":                       "",
		"https://api.example.com:444/v1":         "",
		"javascript:alert(1)":                    "",
		"https://api.example.com/a%2Fb?q=%20#fr": "/a%2Fb?q=%20#fr",
	} {
		got, ok := rewriteLocation(in, r)
		if (want == "") == ok || got != want {
			t.Errorf("rewriteLocation(%q) = %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestResponseBodyStallAbortsClient(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first part")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	srv := newProxy(t, up.URL, Options{ReadTimeout: 300 * time.Millisecond})
	req, _ := http.NewRequest("GET", srv.URL+"/s", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "first part" || err == nil {
		t.Errorf("stalled body: %d %q err=%v (want the first part, then an aborted connection)", resp.StatusCode, b, err)
	}
}

// TestAtMostOneRetry: with two stale pooled connections a GET is retried
// once and then answered 502, never sent a third time.
func TestAtMostOneRetry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	seen := map[string]int{}
	arrived := make(chan struct{}, 2)
	hold := make(chan struct{})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					mu.Lock()
					seen[req.URL.Path]++
					mu.Unlock()
					if i > 0 {
						return // stale: hang up on reuse
					}
					if req.URL.Path == "/warm" {
						arrived <- struct{}{}
						<-hold
					}
					fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}(c)
		}
	}()
	srv := newProxy(t, "http://"+l.Addr().String(), Options{})
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Two concurrent requests put two connections into the pool.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); get("/warm") }()
	}
	<-arrived
	<-arrived
	close(hold)
	wg.Wait()
	code, body := get("/once")
	if code != 502 || body != "Upstream disconnected" {
		t.Errorf("got %d %q, want 502 Upstream disconnected", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["/once"] != 2 {
		t.Errorf("upstream saw /once %d times, want 2 (one retry)", seen["/once"])
	}
}

func TestDisconnectedClassification(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true}, {io.ErrUnexpectedEOF, true}, {&url.Error{Err: io.EOF}, true},
		{errors.New("http: server closed idle connection"), true},
		{errors.New("dial tcp: connection refused"), false},
		{context.DeadlineExceeded, false},
	} {
		if got := disconnected(c.err); got != c.want {
			t.Errorf("disconnected(%v) = %v", c.err, got)
		}
	}
}

// The watchdog fires only after a whole period without progress: an
// expiry that finds recent progress re-arms for the rest of the period,
// and a stopped watchdog never fires. Driven through expire with a
// shifted clock origin, so nothing here depends on timing.
func TestWatchdogExpiry(t *testing.T) {
	const d = time.Hour
	cases := []struct {
		name       string
		sinceKick  time.Duration // progress this long ago; < 0: never kicked
		stopped    bool
		wantCancel bool
	}{
		{"never kicked, period over", -1, false, true},
		{"kicked a minute ago", time.Minute, false, false},
		{"kicked a period ago", d, false, true},
		{"stopped", -1, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			canceled := false
			var w watchdog
			w.start(d, func() { canceled = true })
			defer w.stop()
			w.base = time.Now().Add(-2 * d) // started two periods ago
			if tc.sinceKick >= 0 {
				w.last.Store(int64(2*d - tc.sinceKick))
			}
			if tc.stopped {
				w.stop()
			}
			w.expire()
			if canceled != tc.wantCancel || w.fired.Load() != tc.wantCancel {
				t.Errorf("canceled %v fired %v, want %v", canceled, w.fired.Load(), tc.wantCancel)
			}
			if tc.wantCancel {
				w.kick() // no effect after firing
				if w.last.Load() != int64(2*d-tc.sinceKick) && tc.sinceKick >= 0 {
					t.Error("kick after firing recorded progress")
				}
			}
		})
	}
}

// An upstream that answers TRACE the way Apache httpd does by default
// (TraceEnable On): the request it received, headers included, as the
// body. Forwarded, TRACE would hand the container the real credential
// the proxy injected (docs/credential-proxy.md, Methods never forwarded).
func TestReflectingMethodsNeverForwarded(t *testing.T) {
	var seen sync.Map
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Method, true)
		w.Header().Set("Content-Type", "message/http")
		fmt.Fprintf(w, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
		_ = r.Header.Write(w)
	}))
	defer up.Close()
	srv := newProxy(t, up.URL, Options{})
	for _, m := range []string{"TRACE", "TRACK", "trace", "Trace", "CONNECT"} {
		t.Run(m, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			target := "/v1/messages"
			if m == "CONNECT" {
				target = srv.Listener.Addr().String()
			}
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\nMax-Forwards: 1\r\n\r\n", m, target)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: m})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			if strings.Contains(string(b), "secret-k") {
				t.Fatalf("%s reflected the real credential: %q", m, b)
			}
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s: status %d %q, want 405", m, resp.StatusCode, b)
			}
		})
	}
	for _, m := range []string{"TRACE", "TRACK", "trace", "Trace", "CONNECT"} {
		if _, ok := seen.Load(m); ok {
			t.Errorf("%s reached the upstream", m)
		}
	}
	// Control: the same upstream does reflect an ordinary method, so the
	// test would see a leak.
	req, _ := http.NewRequest("GET", srv.URL+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "Bearer secret-k") {
		t.Fatalf("control: the upstream did not see the credential: %q", b)
	}
}
