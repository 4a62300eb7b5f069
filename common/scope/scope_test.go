package scope

import (
	"net/url"
	"path"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustNew(t testing.TB, allow, deny []Rule) Scope {
	t.Helper()
	s, err := New(allow, deny)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestAllowed(t *testing.T) {
	allow := []Rule{
		{Methods: []string{"GET"}, Path: "/repos/acme/*/pulls/**"},
		{Methods: []string{"GET", "POST"}, Path: "/v1/messages"},
		{Methods: []string{"*"}, Path: "/v1/models/*"},
	}
	deny := []Rule{{Methods: []string{"*"}, Path: "/repos/acme/secret/**"}}
	s := mustNew(t, allow, deny)
	tests := []struct {
		method, path string
		want         bool
	}{
		{"GET", "/repos/acme/x/pulls", true},
		{"GET", "/repos/acme/x/pulls/1/files", true},
		{"POST", "/repos/acme/x/pulls", false},
		{"GET", "/repos/acme/secret/pulls", false},
		{"GET", "/repos/acme/x/issues", false},
		{"POST", "/v1/messages", true},
		{"DELETE", "/v1/messages", false},
		{"PUT", "/v1/models/m1", true},
		{"PUT", "/v1/models", false},
		{"PUT", "/v1/models/m1/x", false},
		{"GET", "//v1//messages/", true},
		{"GET", "/v1/./messages", true},
		{"GET", "/v1/admin/../messages", false},
		{"GET", "/v1/admin/%2e%2e/messages", false},
		{"GET", "/v1/models/../../admin", false},
		{"GET", "/v1/%2e%2e/admin", false},
		{"GET", "/repos/acme/x/pulls/%2e%2e/%2e%2e/secret/pulls", false},
		{"GET", "/repos/acme/x%2Fy/pulls", false},
		{"GET", "/repos/acme/x%5cy/pulls", false},
		{"GET", "/v1/messages;jsessionid=1", false},
		{"GET", "/v1/messages%3b", false},
		{"GET", "/v1/%6dessages", true},
		{"GET", "/../v1/messages", false},
		{"GET", "/v1/messages%zz", false},
		{"GET", "v1/messages", false},
		// Methods case-insensitively: many upstreams act on "delete" as
		// DELETE, so neither an allow nor a deny rule may miss it.
		{"post", "/v1/messages", true},
		{"delete", "/v1/messages", false},
		{"get", "/repos/acme/secret/pulls", false},
	}
	for _, tt := range tests {
		if got := s.Allowed(tt.method, tt.path); got != tt.want {
			t.Errorf("Allowed(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}

func TestEmptyAndDenyOnly(t *testing.T) {
	var zero Scope
	if !zero.Allowed("DELETE", "/x;y/%2f") {
		t.Fatal("zero scope must allow everything (behaviour unchanged)")
	}
	s := mustNew(t, nil, []Rule{{Methods: []string{"DELETE"}, Path: "/**"}})
	if !s.Allowed("GET", "/a/b") || s.Allowed("DELETE", "/a") || s.Allowed("DELETE", "/") {
		t.Fatal("deny-only scope")
	}
}

func TestNewRejects(t *testing.T) {
	bad := []Rule{
		{Path: "/x"},
		{Methods: []string{"get"}, Path: "/x"},
		{Methods: []string{"GET"}, Path: "x"},
		{Methods: []string{"GET"}, Path: "/a*/b"},
		{Methods: []string{"GET"}, Path: "/a/../b"},
		{Methods: []string{"GET"}, Path: "/a;b"},
		{Methods: []string{"GET"}, Path: "/a%2f"},
	}
	for _, r := range bad {
		if _, err := New([]Rule{r}, nil); err == nil {
			t.Errorf("New(allow %+v) accepted", r)
		} else if !strings.Contains(err.Error(), "allow[0]") || !strings.Contains(err.Error(), "example") {
			t.Errorf("error %q lacks position or example", err)
		}
		if _, err := New(nil, []Rule{r}); err == nil {
			t.Errorf("New(deny %+v) accepted", r)
		}
	}
}

// refAllowed is the reference matcher written from the documented rules in
// docs/credential-proxy.md (Scopes), independent of Clean and matchSegs: it decodes
// the whole path, refuses any ".." segment, cleans the rest with path.Clean,
// and matches a regular expression built from the
// pattern. ok is false when the inputs are outside what it models.
func refAllowed(rule Rule, deny bool, method, escaped string) (allowed, ok bool) {
	lower := strings.ToLower(escaped)
	var cleaned string
	unmatchable := !strings.HasPrefix(escaped, "/")
	for _, bad := range []string{"%2f", "%5c", "%3b", "%00", ";", "\\", "\x00"} {
		if strings.Contains(lower, bad) {
			unmatchable = true
		}
	}
	dec, err := url.PathUnescape(escaped)
	if err != nil {
		unmatchable = true
	}
	if !unmatchable {
		if !utf8.ValidString(dec) {
			return false, false
		}
		for _, seg := range strings.Split(dec, "/") {
			if seg == ".." {
				unmatchable = true
			}
		}
		c := path.Clean("/sentinel" + dec)
		cleaned = strings.TrimPrefix(c, "/sentinel")
	}
	if unmatchable {
		return false, true
	}
	var re strings.Builder
	re.WriteString("^")
	for _, seg := range strings.Split(rule.Path, "/") {
		switch seg {
		case "":
		case "*":
			re.WriteString("/[^/]+")
		case "**":
			re.WriteString("(/[^/]+)*")
		default:
			re.WriteString("/" + regexp.QuoteMeta(seg))
		}
	}
	re.WriteString("$")
	rx, err := regexp.Compile(re.String())
	if err != nil {
		return false, false
	}
	methodOK := false
	for _, m := range rule.Methods {
		if m == "*" || m == strings.ToUpper(method) {
			methodOK = true
		}
	}
	hit := methodOK && rx.MatchString(cleaned)
	if deny {
		return !hit, true
	}
	return hit, true
}

func FuzzAllowedVsReference(f *testing.F) {
	f.Add("GET", "GET", "/repos/*/pulls/**", "/repos/a/pulls/1", false)
	f.Add("GET", "*", "/v1/**/x", "/v1/a/../x", true)
	f.Add("GET", "GET", "/v1/models/**", "/v1/admin/%2e%2e/models/x", false)
	f.Add("POST", "POST", "/a", "/%2e%2e/a", false)
	f.Add("GET", "GET", "/a/*", "//a//b%2fc", false)
	f.Add("GET", "GET", "/**", "/a;b", true)
	f.Fuzz(func(t *testing.T, method, ruleMethod, pattern, p string, deny bool) {
		if !utf8.ValidString(pattern) {
			t.Skip()
		}
		rule := Rule{Methods: []string{ruleMethod}, Path: pattern}
		var s Scope
		var err error
		if deny {
			s, err = New(nil, []Rule{rule})
		} else {
			s, err = New([]Rule{rule}, nil)
		}
		if err != nil {
			return
		}
		want, ok := refAllowed(rule, deny, method, p)
		if !ok {
			return
		}
		if got := s.Allowed(method, p); got != want {
			t.Fatalf("rule %+v deny=%v: Allowed(%q, %q) = %v, reference %v", rule, deny, method, p, got, want)
		}
	})
}

func BenchmarkAllowed20Rules(b *testing.B) {
	var allow []Rule
	for i := 0; i < 19; i++ {
		allow = append(allow, Rule{Methods: []string{"GET"}, Path: "/repos/acme/r" + strings.Repeat("x", i) + "/**"})
	}
	allow = append(allow, Rule{Methods: []string{"POST"}, Path: "/v1/messages"})
	s := mustNew(b, allow, nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !s.Allowed("POST", "/v1/messages") {
			b.Fatal("denied")
		}
	}
}
