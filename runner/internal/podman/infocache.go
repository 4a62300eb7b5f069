package podman

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// InfoCacheMaxAge bounds how long a cached answer is trusted even when
// nothing it depends on changed.
const InfoCacheMaxAge = time.Hour

// InfoCacheFile is the cache's name inside the runtime dir. It is the one
// host-facts cache of the runner: the bypass launch, the shield's pre-start
// and its environment check all read it.
const InfoCacheFile = "podman-facts.json"

// versionTimeout and infoTimeout bound the podman queries behind a miss.
const (
	versionTimeout = 30 * time.Second
	infoTimeout    = 60 * time.Second
)

// InfoCache memoises the host facts a launch needs and that cost an exec to
// learn: podman's version and rootless network mode, and small derived
// facts such as the shield's DNS tier (Memo). Rootless `podman info` costs
// about as much as the `podman run -d` it precedes and even `podman version`
// 20-40 ms; the cache keeps `terok-sandbox run` close to a bare podman run.
//
// Every entry is keyed by what its answer depends on, so a change is a miss
// at once, and no entry is older than InfoCacheMaxAge:
//   - podman facts: the podman executable (resolved path, size, mtime,
//     mode), the effective uid, CONTAINERS_CONF and CONTAINERS_CONF_OVERRIDE
//     (names and files), every containers.conf podman may read (user,
//     /etc, /usr/share, and every file in their containers.conf.d), and the
//     network helpers slirp4netns and pasta;
//   - memos: the files the caller names (e.g. the dnsmasq executable).
//
// Root never asks `podman info`: root containers always use slirp4netns
// (docs/shield.md), so the version is all it needs and `podman version` is
// much cheaper; for root, Info fills in only the version and reports
// slirp4netns as the network mode (falling back to podman info if `podman
// version` fails). Any cache failure falls back to
// asking podman; a failed query is never cached.
type InfoCache struct {
	// File is the cache file (e.g. <runtime dir>/podman-facts.json); empty
	// disables caching.
	File string
	// Getenv reads CONTAINERS_CONF, CONTAINERS_CONF_OVERRIDE,
	// XDG_CONFIG_HOME and HOME.
	Getenv func(string) string
	EUID   int
	// ConfFiles, when not nil, replaces the containers.conf locations
	// derived from Getenv (tests point them into a temporary tree).
	ConfFiles []string
	// LookPath finds the network helpers; nil means exec.LookPath.
	LookPath func(string) string
	now      func() time.Time
}

// NewInfoCache is the cache of a runtime directory ("" disables caching).
func NewInfoCache(runtimeDir string, getenv func(string) string, euid int) InfoCache {
	c := InfoCache{Getenv: getenv, EUID: euid}
	if runtimeDir != "" {
		c.File = filepath.Join(runtimeDir, InfoCacheFile)
	}
	return c
}

type infoEntry struct {
	Key  string          `json:"key"`
	Time int64           `json:"time"`
	Info podmaninfo.Info `json:"info"`
}

type memoEntry struct {
	Key   string `json:"key"`
	Time  int64  `json:"time"`
	Value string `json:"value"`
}

// cacheFile is the file's content: the podman facts plus named memos.
type cacheFile struct {
	Podman *infoEntry           `json:"podman,omitempty"`
	Memos  map[string]memoEntry `json:"memos,omitempty"`
}

func (c InfoCache) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

func (c InfoCache) fresh(at int64) bool {
	age := c.clock().Sub(time.Unix(at, 0))
	return age >= 0 && age < InfoCacheMaxAge
}

// load reads the cache file; a missing or corrupt file is an empty cache.
func (c InfoCache) load() cacheFile {
	var f cacheFile
	if c.File == "" {
		return f
	}
	if data, err := os.ReadFile(c.File); err == nil {
		if json.Unmarshal(data, &f) != nil {
			return cacheFile{}
		}
	}
	return f
}

// update re-reads the file, applies change and writes it back atomically
// (a concurrent launch may win the race; the loser's entry is simply
// recomputed next time).
func (c InfoCache) update(change func(*cacheFile)) {
	if c.File == "" {
		return
	}
	f := c.load()
	change(&f)
	data, err := json.Marshal(f)
	if err != nil {
		return
	}
	if atomicfile.MkdirPrivate(filepath.Dir(c.File)) == nil {
		_ = atomicfile.WriteFile(c.File, data, 0o600)
	}
}

// Info returns the cached podman facts or queries podman (bin; "" means
// podman on the path) and caches them.
func (c InfoCache) Info(ctx context.Context, bin string) podmaninfo.Info {
	if bin == "" {
		bin = "podman"
	}
	key, keyErr := c.podmanKey(bin)
	if keyErr == nil {
		if e := c.load().Podman; e != nil && e.Key == key && e.Info.OK && c.fresh(e.Time) {
			return e.Info
		}
	}
	info := c.query(ctx, bin)
	if keyErr == nil && info.OK {
		c.update(func(f *cacheFile) { f.Podman = &infoEntry{Key: key, Time: c.clock().Unix(), Info: info} })
	}
	return info
}

// query asks podman: `podman version` for root, `podman info` otherwise
// (and for root when version fails).
func (c InfoCache) query(ctx context.Context, bin string) podmaninfo.Info {
	if c.EUID == 0 {
		vctx, cancel := context.WithTimeout(ctx, versionTimeout)
		out, err := exec.CommandContext(vctx, bin, "version", "--format", "json").Output()
		cancel()
		if v, ok := clientVersion(out); err == nil && ok {
			// Root containers always use slirp4netns (docs/shield.md), so
			// that is the mode this answer reports.
			return podmaninfo.Info{Version: podmaninfo.ParseVersion(v), RawVersion: v, RootlessNetworkCmd: podmaninfo.Slirp4netns, OK: true}
		}
	}
	qctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	return podmaninfo.Query(qctx, bin)
}

// clientVersion is .Client.Version of `podman version --format json`
// (podman's state is read as JSON, docs/runner.md, Runtime helpers); ok is
// false for anything else, so the caller falls back to podman info.
func clientVersion(out []byte) (string, bool) {
	var v struct {
		Client struct{ Version string }
	}
	if json.Unmarshal(out, &v) != nil {
		return "", false
	}
	s := strings.TrimSpace(v.Client.Version)
	return s, s != "" && !strings.ContainsAny(s, "\n{} ")
}

// Memo returns the cached value of the fact name, or computes it with
// compute and caches it when ok. The entry is keyed by deps (files whose
// identity decides the answer: an executable, a config file; "" entries
// stand for "not installed") and expires after InfoCacheMaxAge. valid
// rejects a cached value the caller would not accept (a tampered or
// outdated file is then a miss).
func (c InfoCache) Memo(name string, deps []string, valid func(string) bool, compute func() (string, bool)) string {
	h := sha256.New()
	fmt.Fprintf(h, "uid=%d\n", c.EUID)
	for _, d := range deps {
		stampFile(h, d)
	}
	key := hex.EncodeToString(h.Sum(nil))
	if e, ok := c.load().Memos[name]; ok && e.Key == key && c.fresh(e.Time) && (valid == nil || valid(e.Value)) {
		return e.Value
	}
	v, ok := compute()
	if ok {
		c.update(func(f *cacheFile) {
			if f.Memos == nil {
				f.Memos = map[string]memoEntry{}
			}
			f.Memos[name] = memoEntry{Key: key, Time: c.clock().Unix(), Value: v}
		})
	}
	return v
}

// stampFile writes a file's identity (path, size, mtime, mode) into h; a
// directory contributes every entry in it as well (a containers.conf.d
// file edited in place does not change the directory's own mtime).
func stampFile(h hash.Hash, f string) {
	if f == "" {
		fmt.Fprintf(h, "-\n")
		return
	}
	fi, err := os.Stat(f)
	if err != nil {
		fmt.Fprintf(h, "%s absent\n", f)
		return
	}
	fmt.Fprintf(h, "%s %d %d %v\n", f, fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
	if !fi.IsDir() {
		return
	}
	entries, err := os.ReadDir(f)
	if err != nil {
		fmt.Fprintf(h, "%s unreadable\n", f)
		return
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(f, n)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			fmt.Fprintf(h, "%s %d %d %v\n", p, st.Size(), st.ModTime().UnixNano(), st.Mode())
		}
	}
}

// confFiles are the containers.conf files and drop-in directories podman
// may read for this user.
func (c InfoCache) confFiles() []string {
	if c.ConfFiles != nil {
		return c.ConfFiles
	}
	get := c.Getenv
	if get == nil {
		get = func(string) string { return "" }
	}
	var files []string
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
	return files
}

// podmanKey fingerprints what the podman facts depend on.
func (c InfoCache) podmanKey(bin string) (string, error) {
	get := c.Getenv
	if get == nil {
		get = func(string) string { return "" }
	}
	look := c.LookPath
	if look == nil {
		look = func(name string) string {
			p, _ := exec.LookPath(name)
			return p
		}
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "uid=%d\nbin=%s\n", c.EUID, path)
	stampFile(h, path)
	for _, env := range []string{"CONTAINERS_CONF", "CONTAINERS_CONF_OVERRIDE"} {
		if v := get(env); v != "" {
			fmt.Fprintf(h, "%s=%s\n", env, v)
			stampFile(h, v)
		}
	}
	for _, f := range c.confFiles() {
		stampFile(h, f)
	}
	for _, helper := range []string{"slirp4netns", "pasta"} {
		p := look(helper)
		fmt.Fprintf(h, "%s=%s\n", helper, p)
		stampFile(h, p)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
