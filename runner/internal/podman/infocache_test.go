package podman

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestInfoCache(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	answer := filepath.Join(dir, "answer")
	os.WriteFile(answer, []byte(`{"version":{"Version":"4.3.1"},"host":{"rootlessNetworkCmd":"slirp4netns"}}`), 0o644)
	bin := filepath.Join(dir, "podman")
	os.WriteFile(bin, []byte("#!/bin/sh\necho x >> "+count+"\ncat "+answer+"\n"), 0o755)
	conf := filepath.Join(dir, "containers.conf")
	os.WriteFile(conf, []byte("[engine]\n"), 0o644)
	calls := func() int {
		data, _ := os.ReadFile(count)
		return strings.Count(string(data), "x")
	}
	now := time.Unix(1_700_000_000, 0)
	c := InfoCache{File: filepath.Join(dir, "run", InfoCacheFile), Getenv: func(k string) string {
		if k == "CONTAINERS_CONF" {
			return conf
		}
		return ""
	}, EUID: 1000, now: func() time.Time { return now }}
	ctx := context.Background()

	if i := c.Info(ctx, bin); !i.OK || i.NetworkMode() != "slirp4netns" || calls() != 1 {
		t.Fatalf("first: %+v calls %d", i, calls())
	}
	if fi, err := os.Stat(c.File); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v", err)
	}
	if i := c.Info(ctx, bin); i.NetworkMode() != "slirp4netns" || calls() != 1 {
		t.Fatalf("cached: calls %d", calls())
	}
	// A changed containers.conf invalidates.
	os.WriteFile(answer, []byte(`{"host":{"rootlessNetworkCmd":"pasta"}}`), 0o644)
	os.WriteFile(conf, []byte("[engine]\nnetwork_cmd = \"pasta\"\n"), 0o644)
	if i := c.Info(ctx, bin); i.NetworkMode() != "pasta" || calls() != 2 {
		t.Fatalf("after conf change: %+v calls %d", i, calls())
	}
	// Another uid does not share the entry.
	c2 := c
	c2.EUID = 1001
	if c2.Info(ctx, bin); calls() != 3 {
		t.Fatalf("other uid: calls %d", calls())
	}
	// Expiry.
	now = now.Add(InfoCacheMaxAge + time.Second)
	if c2.Info(ctx, bin); calls() != 4 {
		t.Fatalf("expired: calls %d", calls())
	}
	// A failed query is not cached; a corrupt cache is a miss.
	os.WriteFile(answer, []byte("not json"), 0o644)
	now = now.Add(2 * InfoCacheMaxAge)
	if i := c.Info(ctx, bin); i.OK {
		t.Fatal("bad answer OK")
	}
	os.WriteFile(c.File, []byte("{corrupt"), 0o600)
	os.WriteFile(answer, []byte(`{"host":{"rootlessNetworkCmd":"slirp4netns"}}`), 0o644)
	before := calls()
	if i := c.Info(ctx, bin); i.NetworkMode() != "slirp4netns" || calls() != before+1 {
		t.Fatal("corrupt cache")
	}
	// No file: no caching, still answers.
	if i := (InfoCache{}).Info(ctx, bin); !i.OK {
		t.Fatal("uncached query failed")
	}
}

// TestInfoCacheRootVersionFastPath: root asks only `podman version` (and
// falls back to podman info when that fails); rootless asks podman info.
func TestInfoCacheRootVersionFastPath(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name        string
		euid        int
		versionOK   bool
		wantCalls   string
		wantVersion string
		wantMode    string
	}{
		{"root: version only", 0, true, "version\n", "4.3.1", "slirp4netns"},
		{"root: version fails, info", 0, false, "version\ninfo\n", "4.9.0", "pasta"},
		{"rootless: info", 1000, true, "info\n", "4.9.0", "pasta"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			calls := filepath.Join(dir, "calls")
			versionExit := "0"
			if !tt.versionOK {
				versionExit = "1"
			}
			bin := filepath.Join(dir, "podman")
			script := "#!/bin/sh\necho \"$1\" >> " + calls + "\ncase \"$1\" in\nversion) echo '{\"Client\":{\"APIVersion\":\"4.3.1\",\"Version\":\"4.3.1\"}}'; exit " + versionExit + " ;;\n" +
				"info) echo '{\"version\":{\"Version\":\"4.9.0\"},\"host\":{\"rootlessNetworkCmd\":\"pasta\"}}' ;;\nesac\n"
			if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			c := NewInfoCache(filepath.Join(dir, "run"), nil, tt.euid)
			c.ConfFiles = []string{}
			for i := 0; i < 3; i++ {
				info := c.Info(ctx, bin)
				if !info.OK || info.RawVersion != tt.wantVersion || info.NetworkMode() != tt.wantMode {
					t.Fatalf("info %+v", info)
				}
			}
			if got, _ := os.ReadFile(calls); string(got) != tt.wantCalls {
				t.Fatalf("podman calls %q, want %q (one query, then cached)", got, tt.wantCalls)
			}
		})
	}
}

// TestInfoCacheKey: every input podman's answer depends on invalidates.
func TestInfoCacheKey(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		change func(t *testing.T, d string)
	}{
		{"podman binary replaced", func(t *testing.T, d string) { appendFile(t, filepath.Join(d, "podman"), "# upgraded\n") }},
		{"containers.conf edited", func(t *testing.T, d string) { appendFile(t, filepath.Join(d, "etc", "containers.conf"), "# x\n") }},
		{"containers.conf.d file edited in place", func(t *testing.T, d string) {
			p := filepath.Join(d, "etc", "containers.conf.d", "10.conf")
			st, _ := os.Stat(filepath.Dir(p))
			appendFile(t, p, "# x\n")
			// The directory's own mtime stays; only the file changed.
			os.Chtimes(filepath.Dir(p), st.ModTime(), st.ModTime())
		}},
		{"containers.conf.d file added", func(t *testing.T, d string) {
			appendFile(t, filepath.Join(d, "etc", "containers.conf.d", "20.conf"), "[engine]\n")
		}},
		{"CONTAINERS_CONF_OVERRIDE edited", func(t *testing.T, d string) { appendFile(t, filepath.Join(d, "override.conf"), "# x\n") }},
		{"network helper installed", func(t *testing.T, d string) { appendFile(t, filepath.Join(d, "bin", "pasta"), "#!/bin/sh\n") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			count := filepath.Join(d, "count")
			appendFile(t, filepath.Join(d, "podman"), "#!/bin/sh\necho x >> "+count+"\necho '{\"version\":{\"Version\":\"4.3.1\"}}'\n")
			os.Chmod(filepath.Join(d, "podman"), 0o755)
			appendFile(t, filepath.Join(d, "etc", "containers.conf"), "[engine]\n")
			appendFile(t, filepath.Join(d, "etc", "containers.conf.d", "10.conf"), "[engine]\n")
			appendFile(t, filepath.Join(d, "override.conf"), "[engine]\n")
			os.MkdirAll(filepath.Join(d, "bin"), 0o755)
			c := NewInfoCache(filepath.Join(d, "run"), func(k string) string {
				if k == "CONTAINERS_CONF_OVERRIDE" {
					return filepath.Join(d, "override.conf")
				}
				return ""
			}, 1000)
			c.ConfFiles = []string{filepath.Join(d, "etc", "containers.conf"), filepath.Join(d, "etc", "containers.conf.d")}
			c.LookPath = func(name string) string {
				if p := filepath.Join(d, "bin", name); fileExists(p) {
					return p
				}
				return ""
			}
			calls := func() int { data, _ := os.ReadFile(count); return strings.Count(string(data), "x") }
			bin := filepath.Join(d, "podman")
			c.Info(ctx, bin)
			c.Info(ctx, bin)
			if calls() != 1 {
				t.Fatalf("warm cache queried again: %d", calls())
			}
			tt.change(t, d)
			c.Info(ctx, bin)
			if calls() != 2 {
				t.Fatalf("%s did not invalidate: %d calls", tt.name, calls())
			}
		})
	}
}

// TestInfoCacheMemo: a memo is cached by its dependencies, re-validated,
// expires, and shares the file with the podman facts.
func TestInfoCacheMemo(t *testing.T) {
	d := t.TempDir()
	dep := filepath.Join(d, "dnsmasq")
	appendFile(t, dep, "v1")
	now := time.Unix(1_700_000_000, 0)
	c := NewInfoCache(filepath.Join(d, "run"), nil, 1000)
	c.now = func() time.Time { return now }
	n := 0
	answer := "dnsmasq"
	compute := func() (string, bool) { n++; return answer, true }
	valid := func(v string) bool { return v == "dnsmasq" || v == "dig" }
	steps := []struct {
		name   string
		before func()
		want   string
		calls  int
	}{
		{"first computes", func() {}, "dnsmasq", 1},
		{"second is cached", func() {}, "dnsmasq", 1},
		{"dependency changed", func() { appendFile(t, dep, "v2"); answer = "dig" }, "dig", 2},
		{"invalid cached value is a miss", func() {
			data, _ := os.ReadFile(c.File)
			os.WriteFile(c.File, []byte(strings.Replace(string(data), `"value":"dig"`, `"value":"evil"`, 1)), 0o600)
		}, "dig", 3},
		{"expired", func() { now = now.Add(InfoCacheMaxAge) }, "dig", 4},
		{"not cached when compute fails", func() {
			compute2 := compute
			compute = func() (string, bool) { v, _ := compute2(); return v, false }
			now = now.Add(2 * InfoCacheMaxAge)
		}, "dig", 5},
		{"so computed again", func() {}, "dig", 6},
	}
	for _, s := range steps {
		s.before()
		if got := c.Memo("dns-tier", []string{dep, ""}, valid, compute); got != s.want || n != s.calls {
			t.Fatalf("%s: got %q after %d computations, want %q after %d", s.name, got, n, s.want, s.calls)
		}
	}
}

func appendFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestClientVersion: only podman's JSON answer counts; text (a template's
// output, an error) is no version, so root falls back to podman info.
func TestClientVersion(t *testing.T) {
	for _, tt := range []struct {
		out  string
		want string
		ok   bool
	}{
		{`{"Client":{"APIVersion":"4.3.1","Version":"4.3.1","GoVersion":"go1.19.8"}}`, "4.3.1", true},
		{`{"Client":{"Version":"5.0.0-dev"},"Server":{"Version":"4.9.0"}}`, "5.0.0-dev", true},
		{"4.3.1\n", "", false},
		{`{"Client":{}}`, "", false},
		{`{"Client":{"Version":"4.3 {x}"}}`, "", false},
		{"", "", false},
	} {
		got, ok := clientVersion([]byte(tt.out))
		if got != tt.want && tt.ok || ok != tt.ok {
			t.Errorf("clientVersion(%q) = %q, %v; want %q, %v", tt.out, got, ok, tt.want, tt.ok)
		}
	}
}
