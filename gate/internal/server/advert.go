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
}

type advertCache struct {
	mu sync.Mutex
	m  map[advertKey]advertEntry
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
	if !wantsV2(proto) || len(proto) > 256 || strings.ContainsFunc(proto, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return false
	}
	if fi, err := os.Stat(filepath.Join(repoDir, "objects")); err != nil || !fi.IsDir() {
		return false
	}
	gitPath := h.git()
	key := advertKey{repo: repoDir, proto: proto, deps: h.configDeps(repoDir, gitPath)}
	h.adverts.mu.Lock()
	e, ok := h.adverts.m[key]
	h.adverts.mu.Unlock()
	if !ok || time.Since(e.at) > advertTTL {
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
		h.adverts.mu.Lock()
		if h.adverts.m == nil || len(h.adverts.m) >= advertEntries {
			h.adverts.m = make(map[advertKey]advertEntry)
		}
		h.adverts.m[key] = e
		h.adverts.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(e.body)
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
