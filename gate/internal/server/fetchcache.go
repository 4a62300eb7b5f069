package server

import (
	"crypto/sha256"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"terok.dev/sandbox/gate/internal/pktline"
)

// Protocol v2 fetch responses to clone-like requests are cached too. Every
// task of a project clones the same mirror, usually in bursts (several tasks
// started together) between mirror updates, and for a small repository the
// upload-pack and pack-objects processes behind each clone cost more server
// CPU than everything else the gate does for it.
//
// Only requests that name no object of the client's are cached: no "have"
// and no "shallow" lines, "done" sent, and nothing but the arguments listed
// in fetchArgAllowed. The answer to such a request is a function of the
// request and of the repository: which wants are allowed depends on the
// refs (and the configuration), and the objects reachable from a wanted
// object id are fixed by that id. So the key holds the request's hash, the
// Git-Protocol value, the identity of the configuration files and the git
// executable (configDeps), of every ref (refsIdentity), and of the files
// that change the commit graph (shallow, info/grafts). Entries live
// advertTTL like the other cached answers. Only complete responses of a git
// that exited 0 are kept, at most packEntryMax bytes each and packCacheMax
// bytes together, so the gate's memory stays small; larger clones always
// run git.
const (
	packEntryMax = 1 << 20
	packCacheMax = 8 << 20
)

// fetchCacheable reports whether body is a complete, well-formed protocol
// v2 fetch request whose answer may be cached (see above). It parses
// untrusted input: anything unexpected is simply not cacheable (git then
// answers it, and rejects it if it is malformed).
func fetchCacheable(body []byte) bool {
	const (
		inCommand = iota
		inCaps
		inArgs
		ended
	)
	state, done := inCommand, false
	for len(body) > 0 {
		if state == ended || len(body) < 4 {
			return false
		}
		n, ok := pktline.Len(body[:4])
		if !ok {
			return false
		}
		switch {
		case n == 0: // flush: the end of the request
			if state != inArgs {
				return false
			}
			state = ended
			body = body[4:]
			continue
		case n == 1: // delim: capabilities end, arguments begin
			if state != inCaps {
				return false
			}
			state = inArgs
			body = body[4:]
			continue
		case n < 5 || n > len(body):
			return false
		}
		line := string(body[4:n])
		body = body[n:]
		line = strings.TrimSuffix(line, "\n")
		switch state {
		case inCommand:
			if line != "command=fetch" {
				return false
			}
			state = inCaps
		case inCaps:
			if !strings.HasPrefix(line, "agent=") && !strings.HasPrefix(line, "object-format=") {
				return false
			}
		case inArgs:
			if line == "done" {
				done = true
			} else if !fetchArgAllowed(line) {
				return false
			}
		}
	}
	return state == ended && done
}

// fetchArgAllowed lists the fetch arguments whose effect on the answer
// depends only on the repository's refs, objects and configuration.
func fetchArgAllowed(line string) bool {
	switch line {
	case "thin-pack", "no-progress", "include-tag", "ofs-delta", "deepen-relative":
		return true
	}
	name, arg, ok := strings.Cut(line, " ")
	if !ok || arg == "" {
		return false
	}
	switch name {
	case "want":
		return isHexID(arg)
	case "deepen", "deepen-since", "deepen-not", "filter":
		return true
	}
	return false
}

func isHexID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// fetchKey is the cache key of a cacheable fetch request; ok is false when
// the refs cannot be read (the request then goes to git uncached).
func (h *Handler) fetchKey(repoDir, proto string, body []byte) (advertKey, bool) {
	refs, ok := refsIdentity(repoDir)
	if !ok {
		return advertKey{}, false
	}
	var graph strings.Builder
	for _, f := range []string{"shallow", "info/grafts"} {
		graph.WriteString(fileIdentity(filepath.Join(repoDir, f)))
		graph.WriteByte('|')
	}
	sum := sha256.Sum256(body)
	return advertKey{
		repo:  repoDir,
		proto: "fetch " + proto + " " + string(sum[:]),
		deps:  h.configDeps(repoDir, h.git()) + refs + graph.String(),
	}, true
}

// serveCachedFetch answers a cacheable fetch request from the cache. On a
// miss it returns a capture to hand to the backend; it is nil when the
// request is not cacheable.
func (h *Handler) serveCachedFetch(w http.ResponseWriter, proto, repoDir string, body []byte) (bool, *fetchCapture) {
	if !fetchCacheable(body) {
		return false, nil
	}
	key, ok := h.fetchKey(repoDir, proto, body)
	if !ok {
		return false, nil
	}
	if e, hit := h.adverts.get(key); hit {
		writeCached(w, "application/x-git-upload-pack-result", e.body)
		return true, nil
	}
	return false, &fetchCapture{key: key, at: time.Now()}
}

// fetchCapture collects a backend's fetch response for the cache while it
// streams to the client.
type fetchCapture struct {
	key advertKey
	at  time.Time // taken before git ran: the entry is never younger than the state it shows

	mu   sync.Mutex
	buf  []byte
	over bool
}

func (c *fetchCapture) add(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over {
		return
	}
	if len(c.buf)+len(p) > packEntryMax {
		c.over, c.buf = true, nil
		return
	}
	c.buf = append(c.buf, p...)
}

// storeFetch keeps a response that git produced in full and that reached
// the client in full (the caller checks both).
func (h *Handler) storeFetch(c *fetchCapture) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over || len(c.buf) == 0 {
		return
	}
	h.adverts.put(c.key, advertEntry{body: c.buf, at: c.at}, true)
}

// captureWriter tees what the backend writes into a fetchCapture.
type captureWriter struct {
	http.ResponseWriter
	c *fetchCapture
}

func (w *captureWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.add(p[:n])
	return n, err
}

func (w *captureWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
