package shield

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeBin writes an executable shell script name into dir.
func fakeBin(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := writeScript(filepath.Join(dir, name), script); err != nil {
		t.Fatal(err)
	}
}

func writeScript(path, script string) error {
	return os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755)
}

func testLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func TestDetectTier(t *testing.T) {
	tests := []struct {
		name    string
		dnsmasq string // version banner; "" → not installed
		dig     bool
		want    string
	}{
		{"dnsmasq with nftset", "Dnsmasq version 2.90\nCompile time options: IPv6 GNU-getopt DBus ipset nftset auth\n", true, TierDnsmasq},
		{"dnsmasq without nftset", "Dnsmasq version 2.85\nCompile time options: IPv6 ipset no-nftset auth\n", true, TierDig},
		{"dnsmasq old, no word", "Dnsmasq version 2.80\nCompile time options: IPv6 ipset\n", false, TierGetent},
		{"nftset only as substring", "options: mynftset\n", true, TierDig},
		{"dig only", "", true, TierDig},
		{"nothing", "", false, TierGetent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.dnsmasq != "" {
				fakeBin(t, dir, "dnsmasq", "cat <<'EOF'\n"+tt.dnsmasq+"EOF\n")
			}
			if tt.dig {
				fakeBin(t, dir, "dig", "exit 0\n")
			}
			if got := (Tools{Path: dir}).DetectTier(context.Background()); got != tt.want {
				t.Fatalf("tier = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	digScript := `case "$2" in
a.example.com) printf 'cname.example.net.\n198.51.100.7\n198.51.100.8\n2001:db8::7\n' ;;
b.example.com) printf '198.51.100.8\n203.0.113.9\n' ;;
wild.example.com) printf '203.0.113.10\n' ;;
*) ;;
esac
`
	getentScript := `case "$2" in
a.example.com) printf '198.51.100.70     a.example.com\n' ;;
*) exit 2 ;;
esac
`
	t.Run("dig", func(t *testing.T) {
		dir := t.TempDir()
		fakeBin(t, dir, "dig", digScript)
		fakeBin(t, dir, "getent", getentScript)
		log, buf := testLog()
		got := Tools{Path: dir}.Resolve(context.Background(), log, []string{"a.example.com", "typo.example.com", "b.example.com", "*.wild.example.com"})
		want := []string{"198.51.100.7", "198.51.100.8", "2001:db8::7", "203.0.113.9", "203.0.113.10"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q want %q", got, want)
		}
		if !strings.Contains(buf.String(), "Domain 'typo.example.com' resolved to no IPs (typo or DNS failure?)") {
			t.Fatalf("missing warning: %s", buf.String())
		}
	})
	t.Run("getent fallback", func(t *testing.T) {
		dir := t.TempDir()
		fakeBin(t, dir, "getent", getentScript)
		log, _ := testLog()
		got := Tools{Path: dir}.Resolve(context.Background(), log, []string{"a.example.com", "b.example.com"})
		if !reflect.DeepEqual(got, []string{"198.51.100.70"}) {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("nothing installed", func(t *testing.T) {
		log, _ := testLog()
		if got := (Tools{Path: t.TempDir()}).Resolve(context.Background(), log, []string{"a.example.com"}); len(got) != 0 {
			t.Fatalf("got %q", got)
		}
	})
}

func TestCachedAllowed(t *testing.T) {
	dir := t.TempDir()
	state := t.TempDir()
	counter := filepath.Join(dir, "calls")
	fakeBin(t, dir, "dig", `echo x >> `+counter+`
case "$2" in
a.example.com) echo 198.51.100.7 ;;
b.example.com) echo 203.0.113.9 ;;
esac
`)
	calls := func() int {
		data, _ := os.ReadFile(counter)
		return strings.Count(string(data), "x")
	}
	tools := Tools{Path: dir}
	log, _ := testLog()
	ctx := context.Background()
	now := time.Now()
	read := func() string {
		data, err := os.ReadFile(filepath.Join(state, "profile.allowed"))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	entriesA := []string{"a.example.com", "10.9.0.0/16", "2001:db8::1/128"}
	got, err := tools.CachedAllowed(ctx, log, state, entriesA, cacheMaxAge, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.9.0.0/16", "2001:db8::1", "198.51.100.7"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
	if read() != "10.9.0.0/16\n2001:db8::1\n198.51.100.7\n" || calls() != 1 {
		t.Fatalf("file %q calls %d", read(), calls())
	}

	steps := []struct {
		name      string
		entries   []string
		maxAge    time.Duration
		now       time.Time
		wantCalls int
		wantFile  string
	}{
		{"fresh, same entries: cached", entriesA, cacheMaxAge, now.Add(time.Minute), 1, "10.9.0.0/16\n2001:db8::1\n198.51.100.7\n"},
		// The old flaw: a fresh cache reused for another profile list.
		{"fresh, other entries: resolved again", []string{"b.example.com"}, cacheMaxAge, now.Add(time.Minute), 2, "203.0.113.9\n"},
		{"same again: cached", []string{"b.example.com"}, cacheMaxAge, now.Add(2 * time.Minute), 2, "203.0.113.9\n"},
		{"force", []string{"b.example.com"}, 0, now.Add(2 * time.Minute), 3, "203.0.113.9\n"},
		{"stale by mtime", []string{"b.example.com"}, cacheMaxAge, now.Add(2 * time.Hour), 4, "203.0.113.9\n"},
		{"order matters", []string{"a.example.com", "b.example.com"}, cacheMaxAge, now.Add(2 * time.Hour), 6, "198.51.100.7\n203.0.113.9\n"},
		{"literals only", []string{"198.51.100.1"}, cacheMaxAge, now.Add(2 * time.Hour), 6, "198.51.100.1\n"},
		{"empty", nil, cacheMaxAge, now.Add(2 * time.Hour), 6, ""},
	}
	for _, st := range steps {
		if _, err := tools.CachedAllowed(ctx, log, state, st.entries, st.maxAge, st.now); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if calls() != st.wantCalls || read() != st.wantFile {
			t.Fatalf("%s: calls %d (want %d) file %q (want %q)", st.name, calls(), st.wantCalls, read(), st.wantFile)
		}
	}
	// A cache file without its key (an older version wrote it) is rebuilt.
	if err := os.Remove(filepath.Join(state, cacheKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := tools.CachedAllowed(ctx, log, state, []string{"a.example.com"}, cacheMaxAge, time.Now()); err != nil {
		t.Fatal(err)
	}
	if calls() != 7 || read() != "198.51.100.7\n" {
		t.Fatalf("keyless cache reused: calls %d file %q", calls(), read())
	}
}
