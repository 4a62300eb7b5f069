package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
)

func tok(n int) string { return fmt.Sprintf("terok-p-%032x", n) }

// TestInjectionPerCredentialType covers every credential type and header
// rule, over TCP with Go's client and over the Unix socket with curl.
func TestInjectionPerCredentialType(t *testing.T) {
	up := newUpstream(t)
	o := fmt.Sprintf("%q", up.origin()+"/base/path?ignored=1#frag")
	e := newEnv(t, routesJSON(
		"oauthp", `{"upstream": `+o+`, "auth_header": "X-Ignored", "auth_prefix": "Ignored "}`,
		"legacy", `{"upstream": `+o+`}`,
		"apikey", `{"upstream": `+o+`, "auth_header": "X-Key-Header", "auth_prefix": "Key "}`,
		"pat", `{"upstream": `+o+`, "auth_header": "Authorization", "auth_prefix": "token "}`,
		"glab", `{"upstream": `+o+`, "auth_header": "PRIVATE-TOKEN", "auth_prefix": ""}`,
		"nullprefix", `{"upstream": `+o+`, "auth_prefix": null}`,
		"claude", `{"upstream": `+o+`, "auth_header": "dynamic"}`,
		"otherkey", `{"upstream": `+o+`, "auth_header": "X-Other"}`,
	))
	s := func(name string) string { return e.secret("REAL-" + name + "-c0ffee") }
	e.cred("default", "oauthp", `{"type": "oauth", "access_token": "`+s("oauth")+`", "refresh_token": "`+s("rt")+`", "expires_at": 99999999999}`)
	e.cred("default", "legacy", `{"access_token": "`+s("legacy")+`", "beta_header": "custom-beta-1"}`)
	e.cred("default", "apikey", `{"type": "api_key", "key": "`+s("apikey")+`"}`)
	e.cred("default", "pat", `{"type": "pat", "token": "`+s("pat")+`", "key": "unused-key"}`)
	e.cred("default", "glab", `{"type": "oauth_token", "token": "`+s("glab")+`"}`)
	e.cred("other", "nullprefix", `{"type": "whatever", "key": "`+s("nullprefix")+`"}`)
	e.cred("default", "claude", `{"type": "api_key", "key": "`+s("claude")+`"}`)
	e.cred("default", "otherkey", `{"type": "something", "token": "", "key": "`+s("otherkey")+`"}`)
	toks := map[string]string{}
	for i, p := range []string{"oauthp", "legacy", "apikey", "pat", "glab", "claude", "otherkey"} {
		toks[p] = e.token(tok(100+i), "default", p)
	}
	toks["nullprefix"] = e.token(tok(200), "other", "nullprefix")
	e.start()

	cases := []struct {
		provider, via   string // via: phantom header used by the client
		wantHdr, want   string
		wantBeta        string
		noHeaders       []string
		clientExtraHdrs []string
	}{
		{provider: "oauthp", via: "Authorization", wantHdr: "Authorization", want: "Bearer REAL-oauth-c0ffee", wantBeta: "oauth-2025-04-20", noHeaders: []string{"X-Ignored"}},
		{provider: "legacy", via: "X-Api-Key", wantHdr: "Authorization", want: "Bearer REAL-legacy-c0ffee", wantBeta: "existing-1,custom-beta-1", clientExtraHdrs: []string{"anthropic-BETA", "existing-1"}},
		{provider: "oauthp", via: "Private-Token", wantHdr: "Authorization", want: "Bearer REAL-oauth-c0ffee", wantBeta: "a,oauth-2025-04-20,b", clientExtraHdrs: []string{"Anthropic-Beta", "a,oauth-2025-04-20,b"}},
		{provider: "apikey", via: "Authorization", wantHdr: "X-Key-Header", want: "Key REAL-apikey-c0ffee"},
		{provider: "pat", via: "Authorization", wantHdr: "Authorization", want: "token REAL-pat-c0ffee"},
		{provider: "glab", via: "Private-Token", wantHdr: "Private-Token", want: "REAL-glab-c0ffee"},
		{provider: "nullprefix", via: "Authorization", wantHdr: "Authorization", want: "Bearer REAL-nullprefix-c0ffee"},
		{provider: "claude", via: "X-Api-Key", wantHdr: "X-Api-Key", want: "REAL-claude-c0ffee", clientExtraHdrs: []string{"X-Api-Key", "second-value"}},
		{provider: "otherkey", via: "Authorization", wantHdr: "X-Other", want: "Bearer REAL-otherkey-c0ffee"},
	}
	for _, c := range cases {
		t.Run(c.provider+"/"+c.via, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url("/v1/messages/a%2Fb%20c?x=1&y=%2F&y=2"), nil)
			val := toks[c.provider]
			if c.via == "Authorization" {
				val = "Bearer " + val
			}
			req.Header.Set(c.via, val)
			req.Header.Add("X-Repeat", "r1")
			req.Header.Add("X-Repeat", "r2")
			for i := 0; i+1 < len(c.clientExtraHdrs); i += 2 {
				req.Header[c.clientExtraHdrs[i]] = append(req.Header[c.clientExtraHdrs[i]], c.clientExtraHdrs[i+1])
			}
			code, h, body := e.do(req)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			got := up.last(t)
			if vs := got.Header.Values(c.wantHdr); len(vs) != 1 || vs[0] != c.want {
				t.Errorf("%s = %q, want exactly [%q]", c.wantHdr, vs, c.want)
			}
			for _, ph := range []string{"Authorization", "X-Api-Key", "Private-Token"} {
				if ph == c.wantHdr {
					continue
				}
				if v := got.Header.Values(ph); len(v) > 0 {
					t.Errorf("phantom header %s forwarded: %q", ph, v)
				}
			}
			for _, n := range c.noHeaders {
				if v := got.Header.Get(n); v != "" {
					t.Errorf("header %s set: %q", n, v)
				}
			}
			if vs := got.Header.Values("Anthropic-Beta"); c.wantBeta != "" && (len(vs) != 1 || vs[0] != c.wantBeta) {
				t.Errorf("anthropic-beta = %q, want [%q]", vs, c.wantBeta)
			} else if c.wantBeta == "" && len(vs) > 0 {
				t.Errorf("anthropic-beta sent for non-OAuth: %q", vs)
			}
			if got.RawPath != "/v1/messages/a%2Fb%20c" || got.RawQuery != "x=1&y=%2F&y=2" {
				t.Errorf("path/query = %q ? %q", got.RawPath, got.RawQuery)
			}
			if got.Host != up.l.Addr().String() {
				t.Errorf("Host = %q", got.Host)
			}
			if vs := got.Header.Values("X-Repeat"); strings.Join(vs, "|") != "r1|r2" {
				t.Errorf("repeated request header = %q", vs)
			}
			if vs := h.Values("X-Multi"); strings.Join(vs, "|") != "one|two" {
				t.Errorf("repeated response header = %q", vs)
			}
			for k, v := range map[string]string{"Retry-After": "7", "X-Ratelimit-Remaining": "41", "Cache-Control": "no-store", "Content-Type": "application/json"} {
				if h.Get(k) != v {
					t.Errorf("response %s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}

	t.Run("curl over the unix socket", func(t *testing.T) {
		out, err := exec.Command("curl", "-sS", "-D", "-", "--unix-socket", e.sock,
			"-H", "Authorization: Bearer "+toks["pat"], "http://proxy/repos/x%20y?per_page=5").CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, out)
		}
		e.mu.Lock()
		e.seen.Write(out)
		e.mu.Unlock()
		if !bytes.Contains(out, []byte(`{"ok":true,"n":0}`)) || !bytes.Contains(out, []byte("X-Multi: one")) {
			t.Fatalf("curl output: %s", out)
		}
		got := up.last(t)
		if got.Header.Get("Authorization") != "token REAL-pat-c0ffee" || got.RawPath != "/repos/x%20y" || got.RawQuery != "per_page=5" {
			t.Errorf("upstream got %+v", got)
		}
		fi, err := os.Stat(e.sock)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket mode: %v %v", fi.Mode(), err)
		}
	})
}

func TestStatusCodes(t *testing.T) {
	up := newUpstream(t)
	o := fmt.Sprintf("%q", up.origin())
	deadPort := testkit.FreePort(t)
	e := newEnv(t, routesJSON(
		"ok", `{"upstream": `+o+`}`,
		"claude", `{"upstream": `+o+`, "auth_header": "dynamic"}`,
		"nocred", `{"upstream": `+o+`}`,
		"broken", `{"upstream": `+o+`}`,
		"notobj", `{"upstream": `+o+`}`,
		"down", fmt.Sprintf(`{"upstream": "http://127.0.0.1:%d"}`, deadPort),
	))
	e.cred("default", "ok", `{"type": "api_key", "key": "`+e.secret("REAL-ok-5ecret")+`"}`)
	e.cred("default", "claude", `{"type": "api_key", "key": "`+e.secret("REAL-claude-5ecret")+`"}`)
	e.cred("default", "broken", `{"type": "oauth", "access_token": ""}`)
	e.cred("default", "notobj", `["x"]`)
	e.cred("default", "down", `{"type": "pat", "token": "`+e.secret("REAL-down-5ecret")+`"}`)
	okTok := e.token(tok(1), "default", "ok")
	e.token(tok(2), "default", "noroute")
	e.token(tok(3), "default", "nocred")
	e.token(tok(4), "default", "broken")
	e.token(tok(5), "default", "down")
	e.token(tok(6), "default", "notobj")
	e.start()

	check := func(name string, wantCode int, wantBody string, hdr ...string) {
		t.Helper()
		code, h, body := e.get("/v1/x", hdr...)
		if code != wantCode || body != wantBody {
			t.Errorf("%s: got %d %q, want %d %q", name, code, body, wantCode, wantBody)
		}
		if code != 200 && h.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", name, h.Get("Content-Type"))
		}
	}
	check("no token", 401, "Missing authentication")
	check("empty auth header", 401, "Missing authentication", "Authorization", "")
	check("garbage token", 401, "Invalid token", "Authorization", "Bearer garbage-token")
	check("scheme only", 401, "Invalid token", "Authorization", "Bearer")
	check("token with trailing words", 401, "Invalid token", "Authorization", "Bearer "+okTok+" extra")
	// Refused unless the proxy runs with --allow-static-marker (TestStaticMarkerSwitch).
	check("static marker", 401, "Invalid token", "X-Api-Key", "terok-proxy-phantom-token:credential-proxy-handles-real-auth")
	check("tab-separated scheme", 200, `{"ok":true,"n":0}`, "Authorization", "token\t \t"+okTok)
	check("bare token", 200, `{"ok":true,"n":0}`, "Authorization", okTok)
	check("no route", 404, "No route for provider: noroute", "Authorization", "Bearer "+tok(2))
	check("no credential", 502, "Credential not configured for this provider", "Authorization", "Bearer "+tok(3))
	check("misconfigured", 502, "Credential misconfigured", "Authorization", "Bearer "+tok(4))
	check("data not an object", 500, "Internal error", "Authorization", "Bearer "+tok(6))
	check("upstream down", 502, "Upstream request failed", "Authorization", "Bearer "+tok(5))
	if code, h, body := e.get("/-/health"); code != 200 || body != `{"status": "ok"}` || h.Get("Content-Type") != "application/json" {
		t.Errorf("health: %d %q %q", code, body, h.Get("Content-Type"))
	}
	// Other methods on the health path are ordinary proxied requests.
	req, _ := http.NewRequest("POST", e.url("/-/health"), nil)
	if code, _, body := e.do(req); code != 401 || body != "Missing authentication" {
		t.Errorf("POST health: %d %q", code, body)
	}
	req, _ = http.NewRequest("HEAD", e.url("/-/health"), nil)
	if code, h, _ := e.do(req); code != 200 || h.Get("Content-Type") != "application/json" {
		t.Errorf("HEAD health: %d", code)
	}

	// Revocation and credential changes take effect on the next request.
	check("before revoke", 200, `{"ok":true,"n":0}`, "Authorization", "Bearer "+okTok)
	e.cred("default", "ok", `{"type": "api_key", "key": "`+e.secret("REAL-ok-rotated")+`"}`)
	check("after rotation", 200, `{"ok":true,"n":0}`, "Authorization", "Bearer "+okTok)
	if got := up.last(t); got.Header.Get("Authorization") != "Bearer REAL-ok-rotated" {
		t.Errorf("rotated credential not used: %q", got.Header.Get("Authorization"))
	}
	e.exec(`DELETE FROM proxy_tokens WHERE project = 'proj' AND task = 'task1'`)
	check("after revoke", 401, "Invalid token", "Authorization", "Bearer "+okTok)
	e.exec(`DELETE FROM credentials WHERE provider = 'claude'`)
	check("static marker without credential", 401, "Invalid token", "X-Api-Key", "terok-proxy-phantom-token:credential-proxy-handles-real-auth")

	logText := e.log()
	for _, want := range []string{"Listening on " + e.sock, fmt.Sprintf("Listening on 127.0.0.1:%d", e.port), "provider=down", "provider=noroute"} {
		if !strings.Contains(logText, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logText, okTok) || strings.Contains(logText, "garbage-token") {
		t.Errorf("log contains a phantom token:\n%s", logText)
	}
}

func TestHTTPSUpstreamHTTP2WithTestCA(t *testing.T) {
	ca := newTestCA(t)
	up := newTLSUpstream(t, ca)
	e := newEnv(t, routesJSON("secure", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "secure", `{"type": "pat", "token": "`+e.secret("REAL-tls-secret")+`"}`)
	tk := e.token(tok(7), "default", "secure")
	e.envVars = append(e.envVars, "SSL_CERT_FILE="+ca.caFile)
	e.start()
	code, h, body := e.get("/api?q=1", "Authorization", "Bearer "+tk)
	if code != 200 {
		t.Fatalf("status %d %q", code, body)
	}
	got := up.last(t)
	if got.Proto != 2 {
		t.Errorf("upstream protocol HTTP/%d, want HTTP/2", got.Proto)
	}
	if got.Header.Get("Authorization") != "Bearer REAL-tls-secret" || h.Get("Retry-After") != "7" {
		t.Errorf("upstream auth %q, response %v", got.Header.Get("Authorization"), h)
	}
	e.stop()

	// Without the test CA the upstream's certificate must be refused.
	e2 := newEnv(t, routesJSON("secure", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e2.cred("default", "secure", `{"type": "pat", "token": "`+e2.secret("REAL-tls-secret")+`"}`)
	tk = e2.token(tok(8), "default", "secure")
	e2.envVars = append(e2.envVars, "SSL_CERT_FILE=/nonexistent/ca.pem", "SSL_CERT_DIR=/nonexistent")
	e2.start()
	before := up.count()
	if code, _, body := e2.get("/api", "Authorization", "Bearer "+tk); code != 502 || body != "Upstream request failed" {
		t.Errorf("untrusted upstream: %d %q", code, body)
	}
	if up.count() != before {
		t.Error("request reached an upstream whose certificate is not trusted")
	}
}

func TestStreamingUploadDownloadAndSSE(t *testing.T) {
	up := newUpstream(t)
	release := make(chan struct{})
	sent1 := make(chan struct{})
	const dl = 100 << 20
	up.handler = func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/download":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", fmt.Sprint(dl))
			buf := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for n := 0; n < dl; n += len(buf) {
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		case "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			fmt.Fprint(w, "event: one\ndata: 1\n\n")
			w.(http.Flusher).Flush()
			close(sent1)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, "event: two\ndata: 2\n\n")
		default:
			fmt.Fprint(w, "uploaded")
		}
	}
	e := newEnv(t, routesJSON("s", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "s", `{"type": "api_key", "key": "`+e.secret("REAL-stream-key")+`"}`)
	tk := e.token(tok(9), "default", "s")
	e.start()

	t.Run("2 MB upload with curl", func(t *testing.T) {
		f := e.dir + "/upload.bin"
		data := bytes.Repeat([]byte("u"), 2<<20)
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
			"-H", "Authorization: Bearer "+tk, "-H", "Content-Type: application/octet-stream",
			"--data-binary", "@"+f, e.url("/upload")).CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "uploaded\n200") {
			t.Fatalf("curl upload: %v %q", err, out)
		}
		if got := up.last(t); got.BodyLen != 2<<20 || got.Method != "POST" {
			t.Errorf("upstream got %d bytes by %s", got.BodyLen, got.Method)
		}
		// The same with chunked framing from Go's client.
		req, _ := http.NewRequest("PUT", e.url("/upload"), io.MultiReader(bytes.NewReader(data)))
		req.Header.Set("Authorization", "Bearer "+tk)
		req.ContentLength = -1
		if code, _, _ := e.do(req); code != 200 || up.last(t).BodyLen != 2<<20 {
			t.Errorf("chunked upload: %d, upstream %d bytes", code, up.last(t).BodyLen)
		}
		// A replayable upload (Idempotency-Key) is buffered and still arrives whole.
		req, _ = http.NewRequest("POST", e.url("/upload"), bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+tk)
		req.Header.Set("Idempotency-Key", "k1")
		if code, _, _ := e.do(req); code != 200 || up.last(t).BodyLen != 2<<20 {
			t.Errorf("idempotent upload: %d, upstream %d bytes", code, up.last(t).BodyLen)
		}
	})

	t.Run("100 MB download", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.url("/download"), nil)
		req.Header.Set("Authorization", "Bearer "+tk)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || n != dl {
			t.Fatalf("downloaded %d bytes: %v", n, err)
		}
		want := sha256.New()
		buf := bytes.Repeat([]byte("0123456789abcdef"), 4096)
		for i := 0; i < dl; i += len(buf) {
			want.Write(buf)
		}
		if hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
			t.Error("download corrupted")
		}
		if resp.Header.Get("Content-Length") != "" {
			t.Errorf("Content-Length forwarded: %q (the body is re-framed)", resp.Header.Get("Content-Length"))
		}
	})

	t.Run("SSE event 1 arrives before the upstream sends event 2", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctxTimeout(t, 30*time.Second), "GET", e.url("/sse"), nil)
		req.Header.Set("Authorization", "Bearer "+tk)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var ev1 strings.Builder
		for !strings.HasSuffix(ev1.String(), "\n\n") {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading event 1 (buffered by the proxy?): %v", err)
			}
			ev1.WriteString(line)
		}
		<-sent1
		select {
		case <-release:
			t.Fatal("event 2 released before event 1 was read")
		default:
		}
		if ev1.String() != "event: one\ndata: 1\n\n" {
			t.Errorf("event 1 = %q", ev1.String())
		}
		close(release) // only now may the upstream send event 2
		rest, _ := io.ReadAll(br)
		if string(rest) != "event: two\ndata: 2\n\n" {
			t.Errorf("event 2 = %q", rest)
		}
		if resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
		}
	})
}

func TestUpstreamHangingTimesOut(t *testing.T) {
	// An upstream that accepts and reads but never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				go func() { _, _ = io.Copy(io.Discard, c) }()
				<-stop
			}()
		}
	}()
	e := newEnv(t, routesJSON("slow", fmt.Sprintf(`{"upstream": "http://%s"}`, l.Addr())))
	e.cred("default", "slow", `{"type": "api_key", "key": "`+e.secret("REAL-slow-key")+`"}`)
	tk := e.token(tok(10), "default", "slow")
	e.start("--upstream-read-timeout=1s")
	code, _, body := e.get("/v1", "Authorization", "Bearer "+tk)
	if code != 502 || body != "Upstream request failed" {
		t.Errorf("hanging upstream: %d %q", code, body)
	}
	if !strings.Contains(e.log(), "timed out") {
		t.Errorf("timeout not logged:\n%s", e.log())
	}
}

// staleUpstream answers the first request on a connection with keep-alive
// and then hangs up as soon as the next request arrives on it, like a
// server that closed an idle connection just as the proxy reused it.
type staleUpstream struct {
	l      net.Listener
	mu     sync.Mutex
	conns  int
	paths  []string
	bodies []string
}

func newStaleUpstream(t *testing.T) *staleUpstream {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &staleUpstream{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *staleUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		if i == 1 {
			return // hang up without answering the second request
		}
		s.mu.Lock()
		s.paths = append(s.paths, req.Method+" "+req.URL.Path)
		s.bodies = append(s.bodies, string(b))
		s.mu.Unlock()
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
	}
}

func TestStaleKeepAliveRetry(t *testing.T) {
	s := newStaleUpstream(t)
	e := newEnv(t, routesJSON("st", fmt.Sprintf(`{"upstream": "http://%s"}`, s.l.Addr())))
	e.cred("default", "st", `{"type": "api_key", "key": "`+e.secret("REAL-stale-key")+`"}`)
	tk := e.token(tok(11), "default", "st")
	e.start()
	send := func(method, path, body string, hdr ...string) (int, string) {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, e.url(path), rd)
		req.Header.Set("Authorization", "Bearer "+tk)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		code, _, b := e.do(req)
		return code, b
	}
	// Warm one pooled upstream connection, then reuse it.
	if c, b := send("GET", "/first", ""); c != 200 || b != "/first" {
		t.Fatalf("first: %d %q", c, b)
	}
	if c, b := send("GET", "/second", ""); c != 200 || b != "/second" {
		t.Errorf("GET on a stale connection not retried: %d %q", c, b)
	}
	// The connection that answered /second is the next stale one.
	// Non-replayable: not retried.
	if c, b := send("POST", "/post", "payload"); c != 502 || b != "Upstream disconnected" {
		t.Errorf("POST on a stale connection: %d %q, want 502 Upstream disconnected", c, b)
	}
	// With an Idempotency-Key it is replayed, body intact.
	if c, b := send("POST", "/warm", "w"); c != 200 {
		t.Fatalf("warm: %d %q", c, b)
	}
	if c, b := send("POST", "/idem", "idem-body", "Idempotency-Key", "abc"); c != 200 || b != "/idem" {
		t.Errorf("idempotent POST on a stale connection: %d %q", c, b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns != 4 {
		t.Errorf("upstream connections = %d, want 4 (two retries on fresh connections)", s.conns)
	}
	if s.bodies[len(s.bodies)-1] != "idem-body" {
		t.Errorf("replayed body = %q", s.bodies[len(s.bodies)-1])
	}
	for _, p := range s.paths {
		if p == "POST /post" {
			t.Error("non-replayable POST was sent twice")
		}
	}
}

func TestConcurrentClients(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("c", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "c", `{"type": "api_key", "key": "`+e.secret("REAL-conc-key")+`"}`)
	tk := e.token(tok(12), "default", "c")
	e.start()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 60 * time.Second}
			req, _ := http.NewRequest("POST", e.url(fmt.Sprintf("/c/%d", i)), strings.NewReader(strings.Repeat("x", i)))
			req.Header.Set("Authorization", "Bearer "+tk)
			resp, err := c.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e.record(resp, b)
			if resp.StatusCode != 200 || string(b) != fmt.Sprintf(`{"ok":true,"n":%d}`, i) {
				errs <- fmt.Sprintf("client %d: %d %q", i, resp.StatusCode, b)
			}
		}(i)
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if up.count() != n {
		t.Errorf("upstream saw %d requests, want %d", up.count(), n)
	}
}

func TestHostileInput(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("h", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "h", `{"type": "api_key", "key": "`+e.secret("REAL-hostile-key")+`"}`)
	tk := e.token(tok(13), "default", "h")
	e.start()

	t.Run("huge header", func(t *testing.T) {
		code, _, _ := e.get("/x", "Authorization", "Bearer "+tk, "X-Big", strings.Repeat("a", 2<<20))
		if code != 431 {
			t.Errorf("2 MiB header: %d, want 431", code)
		}
		code, _, body := e.get("/x", "Authorization", "Bearer "+strings.Repeat("t", 512<<10))
		if code != 401 || body != "Invalid token" {
			t.Errorf("512 KiB token: %d %q", code, body)
		}
	})
	t.Run("CR/LF in the token", func(t *testing.T) {
		for _, tokv := range []string{tk + "\rX-Injected: 1", "Bearer " + tk + "\r\x00", "Bearer \r" + tk} {
			out := e.rawExchange("GET /crlf HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: " + tokv + "\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 400") && !strings.HasPrefix(out, "HTTP/1.1 401") {
				t.Errorf("token %q: %q", tokv, out)
			}
		}
		// A bare LF ends a header line (RFC 9112 allows it): the rest is a
		// header of its own, never part of the token or of the credential.
		out := e.rawExchange("GET /lf HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer " + tk + "\nX-Injected: 1\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 400") && !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Errorf("bare LF: %q", out)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		for _, r := range up.reqs {
			if r.RawPath == "/crlf" {
				t.Errorf("a request with CR in the token reached the upstream")
			}
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.ContainsAny(v, "\r\n") {
						t.Errorf("upstream header %s has a line break: %q", k, v)
					}
				}
			}
			if r.RawPath == "/lf" && r.Header.Get("Authorization") != "Bearer REAL-hostile-key" {
				t.Errorf("bare LF request carried Authorization %q", r.Header.Get("Authorization"))
			}
		}
	})
	t.Run("conflicting Content-Length and Transfer-Encoding", func(t *testing.T) {
		out := e.rawExchange("POST /cl-te HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer " + tk +
			"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 400") && !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Errorf("CL+TE: %q", out)
		}
		out = e.rawExchange("POST /cl-cl HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer " + tk +
			"\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd")
		if !strings.HasPrefix(out, "HTTP/1.1 400") {
			t.Errorf("two Content-Lengths: %q", out)
		}
		up.mu.Lock()
		defer up.mu.Unlock()
		for _, r := range up.reqs {
			if r.RawPath == "/smuggled" || r.RawPath == "/cl-cl" {
				t.Errorf("upstream received %s", r.RawPath)
			}
			if r.RawPath == "/cl-te" && r.BodyLen != 0 {
				t.Errorf("CL+TE body length %d", r.BodyLen)
			}
		}
	})
	t.Run("garbage request lines", func(t *testing.T) {
		for _, p := range []string{"\x00\x01\x02\r\n\r\n", "GET\r\n\r\n", "GET /x HTTP/9.9\r\n\r\n", strings.Repeat("A", 70000) + "\r\n\r\n"} {
			out := e.rawExchange(p)
			if strings.HasPrefix(out, "HTTP/1.1 200") {
				t.Errorf("garbage %q accepted: %q", p[:min(len(p), 20)], out)
			}
		}
	})
	// The proxy survived all of it.
	if code, _, _ := e.get("/-/health"); code != 200 {
		t.Fatal("proxy unhealthy after hostile input")
	}
}

func TestBodyCap(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("b", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "b", `{"type": "api_key", "key": "`+e.secret("REAL-cap-key")+`"}`)
	tk := e.token(tok(14), "default", "b")
	e.start()
	// Declared too large: refused before anything is read or sent.
	out := e.rawExchange(fmt.Sprintf("POST /big HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\nxx", tk, 128<<20+1))
	if !strings.HasPrefix(out, "HTTP/1.1 413") || !strings.HasSuffix(out, "Request body too large") {
		t.Errorf("declared oversize: %q", out)
	}
	if up.count() != 0 {
		t.Error("oversized request reached the upstream")
	}
}

// TestOAuthRefreshInBinary: the running proxy refreshes an expiring OAuth
// credential at startup against a local token endpoint, stores it with its
// other members, and the next request carries the new access token.
func TestOAuthRefreshInBinary(t *testing.T) {
	up := newUpstream(t)
	var mu sync.Mutex
	var calls int
	tokenSrv := newUpstream(t)
	tokenSrv.handler = func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token": "AT-REFRESHED-77", "refresh_token": "RT-NEW-77", "expires_in": 7200}`)
	}
	e := newEnv(t, routesJSON("claude", fmt.Sprintf(`{"upstream": %q, "oauth_refresh": {"token_url": %q, "client_id": "cid"}}`,
		up.origin(), tokenSrv.origin()+"/v1/oauth/token")))
	e.secret("AT-REFRESHED-77")
	e.secret("RT-NEW-77")
	e.cred("default", "claude", `{"type": "oauth", "access_token": "`+e.secret("AT-OLD-77")+`", "refresh_token": "`+e.secret("RT-OLD-77")+`", "expires_at": 1, "account": {"email": "dev@example.invalid"}}`)
	tk := e.token(tok(77), "default", "claude")
	e.start()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.log(), "Refreshed OAuth token for claude (expires in 7200s)") {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh:\n%s", e.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var data string
	if err := e.db.QueryRow(`SELECT data FROM credentials WHERE credential_set = 'default' AND provider = 'claude'`).Scan(&data); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(data, `"access_token":"AT-REFRESHED-77"`) || !strings.Contains(data, `"refresh_token":"RT-NEW-77"`) ||
		!strings.Contains(data, `"email":"dev@example.invalid"`) || !strings.Contains(data, `"type":"oauth"`) {
		t.Errorf("stored after refresh: %s", data)
	}
	if code, _, body := e.get("/v1/messages", "Authorization", "Bearer "+tk); code != 200 {
		t.Fatalf("request after refresh: %d %q", code, body)
	}
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer AT-REFRESHED-77" {
		t.Errorf("upstream got %q", got)
	}
	if code, _, _ := e.get("/v1/messages", "Authorization", "Bearer "+tk); code != 200 {
		t.Fatalf("second request: %d", code)
	}
	mu.Lock()
	if calls != 1 {
		t.Errorf("token endpoint called %d times", calls)
	}
	mu.Unlock()
	// The audit (docs/audit.md, Channel proxy): the refresh is on record,
	// and the first request carrying the renewed token says so.
	e.stop()
	recs := e.auditRecords(e.auditFile)
	if len(recs) != 3 || recs[0].Event != "oauth-refresh" || recs[0].Outcome != "ok" || recs[0].Fields["provider"] != "claude" ||
		recs[0].Fields["credential_set"] != "default" {
		t.Fatalf("records: %+v", recs)
	}
	if recs[1].Fields["oauth_refresh"] != true || recs[2].Fields["oauth_refresh"] != false {
		t.Errorf("oauth_refresh members: %v then %v, want true then false", recs[1].Fields["oauth_refresh"], recs[2].Fields["oauth_refresh"])
	}
}

// Credential rotations and a revocation made by another process (this
// test's own SQLite handle) while 16 keep-alive clients send requests in
// a loop: a request sent after a change committed never carries the
// credential before it, and once the revocation committed every request
// is refused. The proxy answers lookups from a cache validated against
// the database on every request; this is the proof that the cache is as
// fresh as a query.
func TestFreshUnderConcurrentLoad(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("f", fmt.Sprintf(`{"upstream": %q, "auth_header": "dynamic"}`, up.origin())))
	key := func(gen int) string { return e.secret(fmt.Sprintf("REAL-gen-%d", gen)) }
	e.cred("default", "f", `{"type": "api_key", "key": "`+key(1)+`"}`)
	tk := e.token(tok(31), "default", "f")
	e.start()

	const lastGen, revoked = 5, 6
	var committed atomic.Int64 // generation of the last committed change
	committed.Store(1)
	var stop atomic.Bool
	var sent, refusedEarly atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	report := func(s string) {
		select {
		case errs <- s:
		default:
		}
	}
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 30 * time.Second}
			for !stop.Load() {
				gen := committed.Load()
				req, _ := http.NewRequest("GET", e.url("/fresh"), nil)
				req.Header.Set("Authorization", "Bearer "+tk)
				req.Header.Set("X-Sent-Gen", fmt.Sprint(gen))
				resp, err := c.Do(req)
				if err != nil {
					report(err.Error())
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				e.record(resp, b)
				sent.Add(1)
				switch {
				case gen == revoked && resp.StatusCode != 401:
					report(fmt.Sprintf("request sent after the revocation got %d", resp.StatusCode))
				case gen < revoked && resp.StatusCode == 401:
					refusedEarly.Add(1) // the revocation may commit while in flight
				case gen < revoked && resp.StatusCode != 200:
					report(fmt.Sprintf("generation %d: %d %q", gen, resp.StatusCode, b))
				}
			}
		}()
	}
	waitFor := func(n int64) {
		for start := sent.Load(); sent.Load() < start+n && !stop.Load(); {
			time.Sleep(time.Millisecond)
		}
	}
	for gen := 2; gen <= lastGen; gen++ {
		waitFor(30)
		e.cred("default", "f", `{"type": "api_key", "key": "`+key(gen)+`"}`)
		committed.Store(int64(gen))
	}
	waitFor(30)
	e.exec(`DELETE FROM proxy_tokens WHERE token = ?`, tk)
	committed.Store(revoked)
	waitFor(100)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}

	up.mu.Lock()
	defer up.mu.Unlock()
	for _, r := range up.reqs {
		var sentGen, keyGen int
		fmt.Sscan(r.Header.Get("X-Sent-Gen"), &sentGen)
		fmt.Sscanf(r.Header.Get("X-Api-Key"), "REAL-gen-%d", &keyGen)
		if keyGen < sentGen || sentGen == revoked {
			t.Errorf("request sent at generation %d reached the upstream with generation %d", sentGen, keyGen)
		}
	}
	t.Logf("%d requests, %d reached the upstream, %d refused while the revocation landed",
		sent.Load(), len(up.reqs), refusedEarly.Load())
}
