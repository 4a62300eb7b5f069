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
