package route

import (
	"regexp"
	"strings"
	"testing"
)

// specPattern is the routing pattern of docs/gate.md, Request handling, verbatim; the fuzz target checks Parse
// against it.
var specPattern = regexp.MustCompile(`^/([A-Za-z0-9._-]+\.git)(/info/refs|/git-upload-pack|/git-receive-pack|/HEAD)$`)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in         string
		ok         bool
		repo, path string
		query      string
	}{
		{"/myproj.git/info/refs?service=git-upload-pack", true, "myproj.git", InfoRefs, "service=git-upload-pack"},
		{"/myproj.git/git-upload-pack", true, "myproj.git", UploadPack, ""},
		{"/my.proj_1-x.git/git-receive-pack", true, "my.proj_1-x.git", ReceivePack, ""},
		{"/a.git/HEAD", true, "a.git", Head, ""},
		{"/a.git/HEAD?", true, "a.git", Head, ""},
		{"/a.git/info/refs?x?y", true, "a.git", InfoRefs, "x?y"},
		{"/..git/HEAD", true, "..git", Head, ""},
		{"/.git/HEAD", false, "", "", ""},
		{"/../x.git/info/refs", false, "", "", ""},
		{"/x.git/../y.git/info/refs", false, "", "", ""},
		{"/%2e%2e/x.git/info/refs", false, "", "", ""},
		{"/x%2egit/info/refs", false, "", "", ""},
		{"/x.git%2finfo/refs", false, "", "", ""},
		{"//etc/passwd.git/info/refs", false, "", "", ""},
		{"/x.git/objects/info/packs", false, "", "", ""},
		{"/x.git/info/refs/", false, "", "", ""},
		{"/x.git//info/refs", false, "", "", ""},
		{"/x/y.git/info/refs", false, "", "", ""},
		{"/x.GIT/info/refs", false, "", "", ""},
		{"/x.git", false, "", "", ""},
		{"/", false, "", "", ""},
		{"", false, "", "", ""},
		{"*", false, "", "", ""},
		{"http://h/x.git/info/refs", false, "", "", ""},
		{"/x y.git/info/refs", false, "", "", ""},
		{"/x\x00.git/info/refs", false, "", "", ""},
		{"/" + strings.Repeat("a", 300) + ".git/HEAD", false, "", "", ""},
	} {
		got, ok := Parse(tc.in)
		if ok != tc.ok {
			t.Errorf("Parse(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if ok && (got.Repo != tc.repo || got.Path != tc.path || got.Query != tc.query) {
			t.Errorf("Parse(%q) = %+v", tc.in, got)
		}
		if ok && got.PathInfo() != "/"+tc.repo+tc.path {
			t.Errorf("PathInfo(%q) = %q", tc.in, got.PathInfo())
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/a.git/info/refs?service=git-upload-pack", "/a.git/HEAD", "/../a.git/HEAD",
		"/%2e.git/HEAD", "/a.git/git-receive-pack", "//", "/a.git/objects/x", "/.git/HEAD"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, ok := Parse(in)
		path, _, _ := strings.Cut(in, "?")
		want := specPattern.MatchString(path) && len(path) <= maxRepoBytes+len("/")+len(ReceivePack)
		if ok && !want {
			t.Fatalf("Parse(%q) accepted a target the spec pattern refuses", in)
		}
		if !ok && specPattern.MatchString(path) {
			m := specPattern.FindStringSubmatch(path)
			if len(m[1]) <= maxRepoBytes {
				t.Fatalf("Parse(%q) refused a target the spec pattern accepts", in)
			}
		}
		if ok {
			if strings.ContainsAny(r.Repo, "/%\\\x00") || r.Repo == "." || r.Repo == ".." {
				t.Fatalf("Parse(%q) repo %q can leave the base path", in, r.Repo)
			}
		}
	})
}
