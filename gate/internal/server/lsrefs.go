package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/gate/internal/route"
)

// Protocol v2 ls-refs answers are cached as well: a clone or fetch asks for
// them once, and they are a pure function of the request, the refs and the
// configuration. The key holds the request body's hash and the identity
// (inode, size, modification time in ns) of every file that can change the
// answer: HEAD, packed-refs, every entry under refs/ (and reftable/), the
// config files and the git executable. Ref updates are lock-file renames, so
// each one gets a new inode and misses the cache. Fetch (pack) requests are
// never cached.
const (
	lsRefsBodyMax = 64 << 10
	lsRefsOutMax  = 4 << 20
)

var lsRefsPrefix = []byte("0014command=ls-refs\n")

// refsIdentity describes the current state of the repository's refs.
func refsIdentity(repoDir string) (string, bool) {
	var b strings.Builder
	add := func(p string, fi fs.FileInfo) {
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		b.WriteString(p)
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(fi.ModTime().UnixNano(), 36))
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(fi.Size(), 36))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(ino, 36))
		b.WriteByte('|')
	}
	for _, f := range []string{"HEAD", "packed-refs"} {
		if fi, err := os.Stat(filepath.Join(repoDir, f)); err == nil {
			add(f, fi)
		} else {
			b.WriteString(f + ":-|")
		}
	}
	for _, dir := range []string{"refs", "reftable"} {
		root := filepath.Join(repoDir, dir)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == root && os.IsNotExist(err) {
					return nil
				}
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			add(p[len(repoDir):], fi)
			return nil
		})
		if err != nil {
			return "", false
		}
	}
	return b.String(), true
}

// smallV2Body reads the body of a small, uncompressed protocol v2
// upload-pack request, the kind the ls-refs and fetch caches can answer. It
// returns the body, or nil and the (possibly partly consumed) body to pass on.
func (h *Handler) smallV2Body(w http.ResponseWriter, r *http.Request, rt route.Route) ([]byte, io.Reader) {
	if rt.Path != route.UploadPack || r.ContentLength <= 0 || r.ContentLength > lsRefsBodyMax ||
		r.Header.Get("Content-Encoding") != "" || !cacheableProto(r.Header.Get("Git-Protocol")) {
		return nil, nil
	}
	body := make([]byte, r.ContentLength)
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(h.opt.BodyIdle))
	n, err := io.ReadFull(r.Body, body)
	if err != nil {
		return nil, io.MultiReader(bytes.NewReader(body[:n]), errReader{err})
	}
	return body, nil
}

// cacheableProto reports whether a Git-Protocol value asks for v2 and is
// what the backend would pass on as GIT_PROTOCOL unchanged.
func cacheableProto(proto string) bool {
	return wantsV2(proto) && len(proto) <= 256 && !strings.ContainsFunc(proto, func(c rune) bool { return c < 0x21 || c > 0x7e })
}

// serveCachedLsRefs answers a v2 ls-refs request from the cache, filling it
// on a miss. It returns false when body is no ls-refs request or git failed
// (the backend then answers).
func (h *Handler) serveCachedLsRefs(ctx context.Context, w http.ResponseWriter, proto, repoDir string, body []byte) bool {
	if !bytes.HasPrefix(body, lsRefsPrefix) {
		return false
	}
	refs, ok := refsIdentity(repoDir)
	if !ok {
		return false
	}
	gitPath := h.git()
	sum := sha256.Sum256(body)
	key := advertKey{repo: repoDir, proto: "ls-refs " + proto + " " + string(sum[:]), deps: h.configDeps(repoDir, gitPath) + refs}
	e, hit := h.adverts.get(key)
	// The TTL also covers what the key cannot see (config [include] files).
	if !hit {
		out, err := h.runLsRefs(ctx, gitPath, repoDir, proto, body)
		if err != nil {
			return false
		}
		e = advertEntry{body: out, at: time.Now()}
		if len(out) <= lsRefsOutMax {
			h.adverts.put(key, e, false)
		}
	}
	writeCached(w, "application/x-git-upload-pack-result", e.body)
	return true
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func (h *Handler) runLsRefs(ctx context.Context, gitPath, repoDir, proto string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gitPath, "upload-pack", "--stateless-rpc", repoDir)
	cmd.Env = append(append([]string(nil), h.baseEnv...), "GIT_PROTOCOL="+proto)
	cmd.Stdin = bytes.NewReader(body)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("0000")) {
		return nil, os.ErrInvalid
	}
	if msg := strings.TrimSpace(errb.String()); msg != "" {
		h.opt.Log.Warn("git http-backend: "+msg, "repo", filepath.Base(repoDir))
	}
	return out.Bytes(), nil
}
