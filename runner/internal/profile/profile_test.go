package profile

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{"empty", "", nil, ""},
		{"comments and blanks", "# header\n\n   \n  # indented comment\n", nil, ""},
		{"entries trimmed", "  example.com  \n10.1.2.3\n2001:db8::/32\n*.example.org\n", []string{"example.com", "10.1.2.3", "2001:db8::/32", "*.example.org"}, ""},
		{"crlf", "a.example.com\r\nb.example.com\r\n", []string{"a.example.com", "b.example.com"}, ""},
		{"bom", "\ufeffexample.com\n", []string{"example.com"}, ""},
		{"no trailing newline", "example.com", []string{"example.com"}, ""},
		{"duplicates kept in one profile", "example.com\nexample.com\n", []string{"example.com", "example.com"}, ""},
		{"injection", "example.com\n1.2.3.4; flush ruleset\n", nil, "line 2"},
		{"inline comment is not a thing", "example.com # comment\n", nil, "line 1"},
		{"bare tld", "com\n", nil, "line 1"},
		{"bad cidr", "10.0.0.0/33\n", nil, "line 1"},
		{"shell", "$(reboot).example.com\n", nil, "line 1"},
		{"include directive", "include other\n", nil, "line 1"},
		{"zone", "fe80::1%eth0\n", nil, "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("test", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBundledProfilesMatchReferenceData(t *testing.T) {
	// Every bundled profile parses, and is exactly the shipped domain list.
	for _, name := range []string{"base", "dev-standard", "dev-python", "dev-node", "nvidia-hpc"} {
		entries, err := Store{}.Load(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(entries) == 0 {
			t.Fatalf("%s: empty", name)
		}
		ref := filepath.Join("..", "..", "..", "..", "shared", "reference-data", "shield-profiles", name+".domains")
		if data, err := os.ReadFile(ref); err == nil {
			want := strings.Fields(string(data))
			if !reflect.DeepEqual(entries, want) {
				t.Errorf("%s differs from %s:\n got %q\nwant %q", name, ref, entries, want)
			}
		}
	}
	entries, _ := Store{}.Load("dev-standard")
	if entries[0] != "github.com" {
		t.Errorf("dev-standard starts with %q", entries[0])
	}
}

func TestProfilesLookupAndCompose(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("mine.txt", "example.com\n198.51.100.0/24\ngithub.com\n")
	write("base.txt", "override.example.com\n") // user overrides bundled
	write("broken.txt", "ok.example.com\nnot valid!\n")
	write("notes.md", "x\n")
	p := Store{UserDir: dir}

	tests := []struct {
		name    string
		names   []string
		want    []string
		wantErr string
	}{
		{"user profile", []string{"mine"}, []string{"example.com", "198.51.100.0/24", "github.com"}, ""},
		{"override", []string{"base"}, []string{"override.example.com"}, ""},
		{"dedupe first wins", []string{"mine", "dev-node", "mine"}, []string{"example.com", "198.51.100.0/24", "github.com", "registry.npmjs.org", "registry.yarnpkg.com", "cdn.jsdelivr.net", "unpkg.com"}, ""},
		{"unknown", []string{"mine", "nope"}, nil, "Profile not found: 'nope'"},
		{"unsafe traversal", []string{"../etc/passwd"}, nil, "Unsafe name: '../etc/passwd'"},
		{"unsafe dot", []string{".hidden"}, nil, "Unsafe name"},
		{"unsafe empty", []string{""}, nil, "Unsafe name"},
		{"broken entry", []string{"broken"}, nil, "line 2"},
		{"none", nil, nil, "no shield profiles"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Compose(tt.names)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
	if _, err := p.Load("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing profile error %v does not wrap ErrNotFound", err)
	}
	got := p.List()
	want := []string{"base", "broken", "dev-node", "dev-python", "dev-standard", "mine", "nvidia-hpc"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if got := (Store{}).List(); len(got) != 5 {
		t.Errorf("bundled List = %q", got)
	}
}

func TestProfileTooLarge(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("a.example.com\n", maxProfileSize/14+10)
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (Store{UserDir: dir}).Load("big"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err = %v", err)
	}
}

func TestSplitEntries(t *testing.T) {
	a, d := SplitEntries([]string{"example.com", "10.0.0.1", "*.x.org", "2001:db8::/48"})
	if !reflect.DeepEqual(a, []string{"10.0.0.1", "2001:db8::/48"}) || !reflect.DeepEqual(d, []string{"example.com", "*.x.org"}) {
		t.Fatalf("got %q %q", a, d)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"example.com\n", "# c\n10.0.0.0/8\n", "1.2.3.4; flush ruleset", "*.a.b.cd\n\n", "\ufeffx.io\r\n", "::1\nfe80::/10"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		for _, e := range entries {
			// Whatever is accepted must be safe to put into nft rules and
			// dnsmasq configuration lines.
			if strings.ContainsAny(e, " \t\r\n;{}\"'/\\$`") && !IsAddrEntry(e) {
				t.Fatalf("unsafe entry accepted: %q", e)
			}
			if !IsAddrEntry(e) {
				if _, ok := NormalizeDomain(e); !ok {
					t.Fatalf("entry %q is neither address nor domain", e)
				}
			}
		}
	})
}
