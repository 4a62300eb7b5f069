package server

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/gate/internal/auth"
	"terok.dev/sandbox/gate/internal/route"
	"terok.dev/sandbox/gate/internal/tokens"
)

// FuzzServeHTTP drives hostile request lines and credentials through the
// handler's checks. git is missing on purpose: a request that reaches the
// backend is answered 500, and only a valid token for its own project may
// ever get that far.
func FuzzServeHTTP(f *testing.F) {
	dir := f.TempDir()
	base := filepath.Join(dir, "gate")
	for _, p := range []string{"proj.git/objects", "other.git/objects"} {
		if err := os.MkdirAll(filepath.Join(base, p), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	tokfile := filepath.Join(base, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "proj", Task: "1"})
	if err != nil {
		f.Fatal(err)
	}
	h, err := New(Options{BasePath: base, Store: tokens.New(tokfile, "", nil), GitPath: filepath.Join(dir, "no-git")})
	if err != nil {
		f.Fatal(err)
	}
	basic := func(u string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":x")) }
	for _, s := range []struct{ m, t, a string }{
		{"GET", "/proj.git/info/refs?service=git-upload-pack", basic(tok)},
		{"GET", "/other.git/info/refs?service=git-upload-pack", basic(tok)},
		{"POST", "/proj.git/git-receive-pack", basic(tok)},
		{"GET", "/../other.git/HEAD", basic(tok)},
		{"PUT", "/proj.git/HEAD", ""},
		{"GET", "/proj.git/HEAD", "Basic !!"},
	} {
		f.Add(s.m, s.t, s.a)
	}
	f.Fuzz(func(t *testing.T, method, target, authz string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t\x00#") || len(method) == 0 ||
			strings.ContainsAny(method, " \r\n\t\x00/()<>@,;:\\\"[]?={}") {
			return // not a request line net/http would hand to a handler
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Method = method
		req.RequestURI = target
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		code := rec.Code
		rt, routed := route.Parse(target)
		user, hasAuth := auth.BasicUser(authz)
		switch {
		case method != "GET" && method != "POST":
			if code != http.StatusNotImplemented {
				t.Fatalf("%s %q: %d, want 501", method, target, code)
			}
		case !routed:
			if code != http.StatusNotFound {
				t.Fatalf("%q: %d, want 404", target, code)
			}
		case !hasAuth:
			if code != http.StatusUnauthorized || !hasHeader(rec.Header(), "WWW-Authenticate") {
				t.Fatalf("%q %q: %d, want 401", target, authz, code)
			}
		case user != tok || rt.Repo != "proj.git":
			if code != http.StatusForbidden {
				t.Fatalf("%q as %q: %d, want 403", target, user, code)
			}
		}
		if code == http.StatusInternalServerError && (user != tok || rt.Repo != "proj.git") {
			t.Fatalf("%s %q with %q reached the backend", method, target, authz)
		}
	})
}

// hasHeader looks a header up case-insensitively (the gate writes
// WWW-Authenticate in the spec's spelling, not Go's canonical one).
func hasHeader(h http.Header, name string) bool {
	for k, v := range h {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return true
		}
	}
	return false
}
