package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRequest feeds raw HTTP/1.1 requests to the request path: whatever a
// client sends, the proxy must not panic and must not answer with the
// real credential (the upstream here echoes nothing of it).
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"GET /v1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer tok\r\n\r\n",
		"POST /v1?x=%2F HTTP/1.1\r\nHost: a\r\nX-Api-Key: tok\r\nContent-Length: 3\r\n\r\nabc",
		"GET /-/health HTTP/1.1\r\nHost: a\r\n\r\n",
		"PUT /a%20b HTTP/1.1\r\nHost: a\r\nPrivate-Token: tok\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET http://evil/x HTTP/1.1\r\nHost: evil\r\nAuthorization: tok\r\nAnthropic-Beta: a\r\nanthropic-beta: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer garbage\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Add("X-Seen-Auth-Len", strings.Repeat("x", len(r.Header.Get("Authorization"))%7))
		w.Header().Set("Location", r.URL.Query().Get("loc"))
		_, _ = io.WriteString(w, "upstream")
	}))
	defer up.Close()
	srv := newProxy(f, up.URL, Options{MaxBody: 1 << 16})
	client := srv.Client()
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		out, err := http.NewRequest(req.Method, srv.URL+req.URL.RequestURI(), req.Body)
		if err != nil {
			return
		}
		out.Header = req.Header
		resp, err := client.Do(out)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var hdr bytes.Buffer
		_ = resp.Header.Write(&hdr)
		if bytes.Contains(body, []byte("secret-k")) || bytes.Contains(hdr.Bytes(), []byte("secret-k")) {
			t.Fatalf("the real credential reached the client: %q %q", hdr.String(), body)
		}
	})
}
