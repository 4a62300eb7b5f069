package podman

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// InfoCacheMaxAge bounds how long a cached `podman info` answer is trusted
// even when nothing it depends on changed.
const InfoCacheMaxAge = time.Hour

// InfoCacheFile is the cache's name inside the runtime dir.
const InfoCacheFile = "podman-info.json"

// InfoCache memoises the facts of `podman info -f json` that the launch
// needs (network mode, version). Rootless `podman info` costs about as much
// as the `podman run -d` it precedes; the cache keeps `terok-sandbox run`
// within a few percent of a bare podman run. The key covers everything the
// answer depends on: the podman binary, the containers.conf files podman
// reads, the network helpers it looks for and the uid; a changed key or an
// entry older than InfoCacheMaxAge is a miss. Any cache failure falls back
// to asking podman.
type InfoCache struct {
	// File is the cache file (e.g. <runtime dir>/podman-info.json); empty
	// disables caching.
	File string
	// Getenv reads CONTAINERS_CONF, XDG_CONFIG_HOME and HOME.
	Getenv func(string) string
	EUID   int
	now    func() time.Time
}

type infoCacheEntry struct {
	Key  string          `json:"key"`
	Time int64           `json:"time"`
	Info podmaninfo.Info `json:"info"`
}

// Info returns the cached facts or queries podman (bin) and caches them.
func (c InfoCache) Info(ctx context.Context, bin string) podmaninfo.Info {
	if bin == "" {
		bin = "podman"
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	key, keyErr := c.key(bin)
	if c.File != "" && keyErr == nil {
		if data, err := os.ReadFile(c.File); err == nil {
			var e infoCacheEntry
			if json.Unmarshal(data, &e) == nil && e.Key == key && e.Info.OK {
				age := now().Sub(time.Unix(e.Time, 0))
				if age >= 0 && age < InfoCacheMaxAge {
					return e.Info
				}
			}
		}
	}
	info := podmaninfo.Query(ctx, bin)
	if c.File != "" && keyErr == nil && info.OK {
		if data, err := json.Marshal(infoCacheEntry{Key: key, Time: now().Unix(), Info: info}); err == nil {
			if atomicfile.MkdirPrivate(filepath.Dir(c.File)) == nil {
				_ = atomicfile.WriteFile(c.File, data, 0o600)
			}
		}
	}
	return info
}

// key fingerprints what podman info's network facts depend on.
func (c InfoCache) key(bin string) (string, error) {
	get := c.Getenv
	if get == nil {
		get = func(string) string { return "" }
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "uid=%d\nbin=%s\n", c.EUID, path)
	files := []string{path}
	if v := get("CONTAINERS_CONF"); v != "" {
		fmt.Fprintf(h, "CONTAINERS_CONF=%s\n", v)
		files = append(files, v)
	}
	userConf := ""
	if x := get("XDG_CONFIG_HOME"); x != "" {
		userConf = filepath.Join(x, "containers")
	} else if home := get("HOME"); home != "" {
		userConf = filepath.Join(home, ".config", "containers")
	}
	for _, dir := range []string{userConf, "/etc/containers", "/usr/share/containers"} {
		if dir != "" {
			files = append(files, filepath.Join(dir, "containers.conf"), filepath.Join(dir, "containers.conf.d"))
		}
	}
	for _, helper := range []string{"slirp4netns", "pasta"} {
		p, _ := exec.LookPath(helper)
		files = append(files, p)
		fmt.Fprintf(h, "%s=%s\n", helper, p)
	}
	for _, f := range files {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(h, "%s %d %d %v\n", f, fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
		} else {
			fmt.Fprintf(h, "%s absent\n", f)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
