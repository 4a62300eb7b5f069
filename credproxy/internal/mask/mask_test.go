package mask

import (
	"strings"
	"testing"
)

func TestPath(t *testing.T) {
	m, err := New([]string{"/v1/files/{}/content", "/v1/files/{}", "/users/{}/**", "/orgs/*/members/{}"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"/v1/files/file-abc123/content", "/v1/files/{}/content"},
		{"/v1/files/file-abc123", "/v1/files/{}"},
		{"/v1/files", "/v1/files"},                    // no pattern matches: unchanged
		{"/v1/files/a/b", "/v1/files/a/b"},            // too long for both
		{"/users/alice", "/users/{}"},                 // ** matches zero segments
		{"/users/alice/repos/x", "/users/{}/repos/x"}, // ** keeps the rest
		{"/orgs/acme/members/bob", "/orgs/acme/members/{}"},
		{"//v1/./files/%66oo", "/v1/files/{}"}, // cleaned before matching
		{"/v1/files/a%2Fb", "{}"},              // cannot be cleaned: hidden whole
		{"/v1/files/../secret", "{}"},
		{"/users/al%20ice/x%20y", "/users/{}/x%20y"}, // kept segments re-escaped
	} {
		if got := m.Path(tc.in); got != tc.want {
			t.Errorf("Path(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var zero Masks
	if got := zero.Path("/v1/files/../x"); got != "/v1/files/../x" {
		t.Errorf("zero Masks changed the path: %q", got)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, p := range []string{"", "v1/{}", "/v1//{}", "/v1/files", "/**/{}", "/v1/{x}", "/v1/a*/{}", "/../{}", "/v1/%2e/{}", "/a;b/{}"} {
		if _, err := New([]string{p}); err == nil {
			t.Errorf("New(%q) accepted a malformed pattern", p)
		} else if !strings.Contains(err.Error(), "example") {
			t.Errorf("New(%q) error has no example: %v", p, err)
		}
	}
}

// FuzzPath: any request path and pattern, never a panic; a hidden segment
// never leaks: when a pattern matched, the result has as many segments as
// the cleaned path and every {} stands where the pattern has one.
func FuzzPath(f *testing.F) {
	f.Add("/v1/files/{}", "/v1/files/abc")
	f.Add("/u/{}/**", "/u/x/%2e%2e/y")
	f.Add("/*/{}", "//a/./b")
	f.Fuzz(func(t *testing.T, pat, path string) {
		m, err := New([]string{pat})
		if err != nil {
			return
		}
		out := m.Path(path)
		if out == path || out == Placeholder {
			return
		}
		if !strings.Contains(out, Placeholder) {
			t.Fatalf("pattern %q matched %q but hid nothing: %q", pat, path, out)
		}
	})
}
