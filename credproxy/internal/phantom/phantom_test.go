package phantom

import (
	"net/http"
	"strings"
	"testing"
)

func TestExtract(t *testing.T) {
	for _, c := range []struct {
		hdr  http.Header
		want string
		ok   bool
	}{
		{http.Header{}, "", false},
		{http.Header{"Authorization": {""}}, "", false},
		{http.Header{"Authorization": {"Bearer tok1"}}, "tok1", true},
		{http.Header{"Authorization": {"token   \t tok2"}}, "tok2", true},
		{http.Header{"Authorization": {"tok3"}}, "tok3", true},
		{http.Header{"Authorization": {"Bearer a b"}}, "a b", true},
		{http.Header{"Authorization": {""}, "X-Api-Key": {"k1"}}, "k1", true},
		{http.Header{"X-Api-Key": {"k2"}, "Private-Token": {"p"}}, "k2", true},
		{http.Header{"Private-Token": {"p1"}}, "p1", true},
		{http.Header{"Authorization": {"A a"}, "X-Api-Key": {"k"}}, "a", true},
		{http.Header{"authorization": {"Bearer lower"}}, "lower", true}, // not canonicalised
		{http.Header{"PRIVATE-TOKEN": {"upper"}}, "upper", true},
		{http.Header{"Authorization": {"first", "second"}}, "first", true},
	} {
		got, ok := Extract(c.hdr)
		if got != c.want || ok != c.ok {
			t.Errorf("Extract(%v) = %q %v, want %q %v", c.hdr, got, ok, c.want, c.ok)
		}
	}
}

func FuzzExtract(f *testing.F) {
	for _, s := range []string{"Bearer terok-p-0123", "token x", "x", " ", "\t\t", "Bearer  ", "a\tb c"} {
		f.Add(s, "", "")
		f.Add("", s, "")
		f.Add("", "", s)
	}
	f.Fuzz(func(t *testing.T, auth, apiKey, priv string) {
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		if apiKey != "" {
			h.Set("X-Api-Key", apiKey)
		}
		if priv != "" {
			h.Set("Private-Token", priv)
		}
		tok, ok := Extract(h)
		if ok != (auth != "" || apiKey != "" || priv != "") {
			t.Fatalf("ok = %v for %q %q %q", ok, auth, apiKey, priv)
		}
		if !ok {
			return
		}
		src := auth
		if src == "" {
			src = apiKey
		}
		if src == "" {
			src = priv
		}
		if !strings.HasSuffix(src, tok) {
			t.Fatalf("token %q is not a suffix of %q", tok, src)
		}
		if strings.ContainsAny(src, " \t") && strings.HasPrefix(tok, " ") {
			t.Fatalf("token %q keeps leading whitespace", tok)
		}
	})
}

// TestExtractIsStable: a header map that was not canonicalised and holds
// several spellings of Authorization gives the same token every time (map
// order is random): the first spelling by name.
func TestExtractIsStable(t *testing.T) {
	h := http.Header{"authorization": {"Bearer d"}, "AUTHORIZATION": {"Bearer a"}, "AuThOrIzAtIoN": {"Bearer b"}, "aUTHORIZATION": {"Bearer c"}}
	for i := 0; i < 50; i++ {
		if tok, ok := Extract(h); !ok || tok != "a" {
			t.Fatalf("run %d: Extract = %q %v, want the AUTHORIZATION token a", i, tok, ok)
		}
	}
}
