package server

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"terok.dev/sandbox/gate/internal/route"
)

// The protocol v2 capability advertisement (GET info/refs with
// Git-Protocol: version=2) lists no refs: it depends only on the git
// binary and configuration. Every clone asks for it, and running
// `git upload-pack --advertise-refs` for it costs a process per clone, so it
// is cached per repository and keyed by the identity of everything it can
// depend on: the git executable, the system, global and repository config
// files, and the client's Git-Protocol value. Any change to one of them is
// a miss; entries also expire after advertTTL as a safety net. v0 ref
// advertisements list refs and are never cached.
const (
	advertTTL     = 30 * time.Second
	advertMax     = 64 << 10
	advertEntries = 256
)

type advertKey struct {
	repo, proto string
	deps        string // identities of the files the advertisement depends on
}

type advertEntry struct {
	body []byte
	at   time.Time
	pack bool // a fetch response, counted in packBytes
}

type advertCache struct {
	mu sync.Mutex
	m  map[advertKey]advertEntry
	// packBytes is the size of the fetch responses in m (fetchcache.go).
	packBytes int
}

// get returns a live entry.
func (c *advertCache) get(k advertKey) (advertEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || time.Since(e.at) > advertTTL {
		return advertEntry{}, false
	}
	return e, true
}

// put stores an entry. Fetch responses (pack) count against packCacheMax:
// expired entries go first, then the oldest responses until the new one
// fits. The map starts over when it holds advertEntries entries.
func (c *advertCache) put(k advertKey, e advertEntry, pack bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= advertEntries {
		c.m, c.packBytes = make(map[advertKey]advertEntry), 0
	}
	if old, ok := c.m[k]; ok {
		c.drop(k, old)
	}
	if pack {
		now := time.Now()
		for k2, e2 := range c.m {
			if now.Sub(e2.at) > advertTTL {
				c.drop(k2, e2)
			}
		}
		for c.packBytes+len(e.body) > packCacheMax {
			var oldest advertKey
			var found bool
			var at time.Time
			for k2, e2 := range c.m {
				if e2.pack && (!found || e2.at.Before(at)) {
					oldest, at, found = k2, e2.at, true
				}
			}
			if !found {
				return
			}
			c.drop(oldest, c.m[oldest])
		}
		e.pack = true
		c.packBytes += len(e.body)
	}
	c.m[k] = e
}

func (c *advertCache) drop(k advertKey, e advertEntry) {
	delete(c.m, k)
	if e.pack {
		c.packBytes -= len(e.body)
	}
}

// writeCached sends a cached answer as git would have (same headers), with
// a length instead of chunks.
func writeCached(w http.ResponseWriter, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

func fileIdentity(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return p + ":-"
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return p + ":" + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + ":" + strconv.FormatInt(fi.Size(), 10) + ":" + strconv.FormatUint(ino, 10)
}

// configDeps lists the files whose change must invalidate an advertisement.
func (h *Handler) configDeps(repoDir, gitPath string) string {
	home := h.opt.Getenv("HOME")
	xdg := h.opt.Getenv("XDG_CONFIG_HOME")
	if xdg == "" && home != "" {
		xdg = filepath.Join(home, ".config")
	}
	files := []string{gitPath, "/etc/gitconfig", filepath.Join(repoDir, "config")}
	if home != "" {
		files = append(files, filepath.Join(home, ".gitconfig"))
	}
	if xdg != "" {
		files = append(files, filepath.Join(xdg, "git", "config"))
	}
	var b strings.Builder
	for _, f := range files {
		b.WriteString(fileIdentity(f))
		b.WriteByte('|')
	}
	return b.String()
}

func wantsV2(proto string) bool {
	for _, f := range strings.Split(proto, ":") {
		if f == "version=2" {
			return true
		}
	}
	return false
}

// serveCachedAdvert answers a v2 upload-pack capability request from the
// cache (filling it on a miss). It returns false when the request is not
// such a request, leaving it to the backend.
func (h *Handler) serveCachedAdvert(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route.Route, repoDir string) bool {
	if rt.Path != route.InfoRefs {
		return false
	}
	q, err := url.ParseQuery(rt.Query)
	if err != nil || q.Get("service") != "git-upload-pack" {
		return false
	}
	proto := r.Header.Get("Git-Protocol")
	if !cacheableProto(proto) {
		return false
	}
	if fi, err := os.Stat(filepath.Join(repoDir, "objects")); err != nil || !fi.IsDir() {
		return false
	}
	gitPath := h.git()
	key := advertKey{repo: repoDir, proto: proto, deps: h.configDeps(repoDir, gitPath)}
	e, ok := h.adverts.get(key)
	if !ok {
		// A miss runs git: it counts against the process cap like any
		// other backend (distinct Git-Protocol values must not bypass it).
		release, ok := h.acquire(ctx, w)
		if !ok {
			return true // answered 503, or the client is gone
		}
		body, err := h.runAdvert(ctx, gitPath, repoDir, proto)
		release()
		if err != nil {
			return false // let the backend produce (and report) the answer
		}
		e = advertEntry{body: body, at: time.Now()}
		// With transfer.advertiseSID each upload-pack names its own
		// session: such an answer is never shared.
		if !bytes.Contains(body, []byte("session-id=")) {
			h.adverts.put(key, e, false)
		}
	}
	writeCached(w, "application/x-git-upload-pack-advertisement", e.body)
	return true
}

func (h *Handler) runAdvert(ctx context.Context, gitPath, repoDir, proto string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gitPath, "upload-pack", "--stateless-rpc", "--advertise-refs", repoDir)
	cmd.Env = append(append([]string(nil), h.baseEnv...), "GIT_PROTOCOL="+proto)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	if out.Len() > advertMax || !bytes.HasPrefix(out.Bytes(), []byte("000eversion 2\n")) {
		return nil, os.ErrInvalid
	}
	if msg := strings.TrimSpace(errb.String()); msg != "" {
		h.opt.Log.Warn("git http-backend: "+msg, "repo", filepath.Base(repoDir))
	}
	return out.Bytes(), nil
}
