package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestBasicUser(t *testing.T) {
	tok := "terok-g-0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name, in, user string
		ok             bool
	}{
		{"token as user", "Basic " + b64(tok+":"), tok, true},
		{"password ignored", "Basic " + b64(tok+":x-oauth"), tok, true},
		{"colon in password", "Basic " + b64(tok+":a:b"), tok, true},
		{"scheme case", "bAsIc " + b64("u:p"), "u", true},
		{"extra spaces", "Basic   " + b64("u:p") + " ", "u", true},
		{"missing", "", "", false},
		{"bearer", "Bearer " + tok, "", false},
		{"no colon", "Basic " + b64(tok), "", false},
		{"empty user", "Basic " + b64(":pw"), "", false},
		{"bad base64", "Basic !!!", "", false},
		{"url base64", "Basic " + base64.URLEncoding.EncodeToString([]byte("\xfb\xff:p")), "", false},
		{"not utf8", "Basic " + b64("\xff\xfe:p"), "", false},
		{"scheme only", "Basic", "", false},
		{"huge", "Basic " + strings.Repeat("A", MaxHeader), "", false},
	} {
		user, ok := BasicUser(tc.in)
		if ok != tc.ok || user != tc.user {
			t.Errorf("%s: BasicUser(%q) = %q, %v; want %q, %v", tc.name, tc.in, user, ok, tc.user, tc.ok)
		}
	}
}

func FuzzBasicUser(f *testing.F) {
	for _, s := range []string{"Basic " + b64("u:p"), "basic " + b64(":"), "Basic", "Bearer x", "Basic " + b64("\xff:")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		user, ok := BasicUser(in)
		if !ok {
			if user != "" {
				t.Fatalf("refused header returned user %q", user)
			}
			return
		}
		if user == "" || strings.Contains(user, ":") {
			t.Fatalf("BasicUser(%q) = %q", in, user)
		}
		if !strings.HasPrefix(strings.ToLower(in), "basic ") {
			t.Fatalf("accepted non-Basic header %q", in)
		}
	})
}
