// Package tokens is the gate's read-only, hot-reloading view of tokens.json
// (docs/gate.md, Request handling; docs/formats.md, Gate tokens file). Every lookup stats the file and
// re-reads it when its identity changed, so a created token works and a
// revoked one is refused on the very next request, without a restart.
package tokens

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/taskend"
)

// Wildcard is the project returned for the admin token: every repository.
const Wildcard = "*"

// fileID is what tells us the file changed: an atomic replace changes the
// inode, an in-place write the size or modification time.
type fileID struct {
	mtimeNs int64
	size    int64
	ino     uint64
	dev     uint64
}

type entry struct {
	project, task string
	expires       time.Time // zero: none (docs/formats.md, Gate tokens file)
	container     string    // binding; "": none
	boundAt       time.Time
}

// Store validates tokens. It is safe for concurrent use.
type Store struct {
	path  string
	admin [sha256.Size]byte // sha256 of the admin token; zero when none
	has   bool
	log   *slog.Logger
	ends  *taskend.Watcher // nil: bindings are not checked (tests only)

	mu     sync.Mutex
	loaded bool
	id     fileID
	// byHash is keyed by sha256(token) so the map lookup does not compare
	// secret bytes directly.
	byHash map[[sha256.Size]byte]entry
	// revoked remembers the tokens that left the file while this process
	// ran, so an audit record can tell "revoked" from "unknown"
	// (docs/audit.md, Channel gate). Bounded by maxRevoked.
	revoked map[[sha256.Size]byte]entry
}

// maxRevoked bounds the memory of revoked tokens; past it the oldest
// knowledge is dropped (they are then reported as unknown).
const maxRevoked = 4096

// Result is what a token lookup found.
type Result struct {
	Project, Task string
	OK            bool // the token opens Project (Wildcard: every project)
	Admin         bool
	Revoked       bool // not OK: the token was in the file earlier in this process's life
	Expired       bool // not OK: the token is in the file and its expiry has passed
	// Gone: not OK, the container the token is bound to has ended since
	// (docs/gate.md, Tokens bound to a container).
	Gone      bool
	Container string // the binding of a Gone token
	// End is how a Gone token's task ended (taskend reasons: stopped,
	// exited, start-failed, process-gone, lease-expired; "unchecked" when
	// no task-ends watcher is set).
	End string
}

// New returns a store for path. admin may be empty (no admin token).
func New(path, admin string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, log: log}
	if admin != "" {
		s.admin = sha256.Sum256([]byte(admin))
		s.has = true
	}
	return s
}

// WithTaskEnds makes the store refuse tokens whose container's end is
// recorded in w (common/taskend). Returns s.
func (s *Store) WithTaskEnds(w *taskend.Watcher) *Store {
	s.ends = w
	return s
}

// Validate returns the project the token opens (Wildcard for the admin
// token) and the task, or ok false for an unknown token.
func (s *Store) Validate(tok string) (project, task string, ok bool) {
	r := s.Lookup(tok)
	return r.Project, r.Task, r.OK
}

// Lookup is Validate with the detail an audit record needs: for a revoked
// token, the project and task it belonged to.
func (s *Store) Lookup(tok string) Result {
	h := sha256.Sum256([]byte(tok))
	if s.has && subtle.ConstantTimeCompare(h[:], s.admin[:]) == 1 {
		return Result{Project: Wildcard, OK: true, Admin: true}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	if e, ok := s.byHash[h]; ok {
		// Expiry passes without a change of the file: checked on every
		// lookup, like a revoked token refused (docs/gate.md, Token expiry).
		if !e.expires.IsZero() && !time.Now().Before(e.expires) {
			return Result{Project: e.project, Task: e.task, Expired: true}
		}
		if e.container != "" {
			if s.ends == nil {
				// A binding nobody checks would mislead: fail closed.
				return Result{Project: e.project, Task: e.task, Gone: true, Container: e.container, End: "unchecked"}
			}
			if end, gone := s.ends.Gone(e.container, e.boundAt); gone {
				return Result{Project: e.project, Task: e.task, Gone: true, Container: e.container, End: end.Reason}
			}
		}
		return Result{Project: e.project, Task: e.task, OK: true}
	}
	if e, ok := s.revoked[h]; ok {
		return Result{Project: e.project, Task: e.task, Revoked: true}
	}
	return Result{}
}

// refresh re-reads the file when its identity changed. Called with mu held.
func (s *Store) refresh() {
	fi, err := os.Stat(s.path)
	if err != nil {
		if s.loaded || s.byHash == nil {
			if !os.IsNotExist(err) {
				s.log.Warn("cannot stat gate tokens file; refusing every task token",
					"file", s.path, "error", err.Error(), "next", "check the file's permissions")
			}
		}
		s.loaded, s.byHash = false, nil
		return
	}
	id := fileID{mtimeNs: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino, id.dev = st.Ino, uint64(st.Dev)
	}
	if s.loaded && id == s.id {
		return
	}
	s.id, s.loaded = id, true
	data, err := os.ReadFile(s.path)
	if err != nil {
		s.byHash = nil
		s.log.Warn("cannot read gate tokens file; refusing every task token",
			"file", s.path, "error", err.Error(), "next", "check the file's permissions")
		return
	}
	entries, skipped, err := gatetokens.Parse(data)
	if err != nil {
		s.byHash = nil
		s.log.Warn("gate tokens file is not valid JSON; refusing every task token until it is fixed",
			"file", s.path, "error", err.Error(),
			"next", "repair the file or re-create the tasks' tokens with 'terok-sandbox gate token create'")
		return
	}
	if skipped > 0 {
		s.log.Warn("gate tokens file has malformed entries; they are ignored", "file", s.path, "skipped", skipped)
	}
	m := make(map[[sha256.Size]byte]entry, len(entries))
	for _, e := range entries {
		m[sha256.Sum256([]byte(e.Token))] = entry{project: e.Project, task: e.Task, expires: e.Expires,
			container: e.Container, boundAt: e.BoundAt}
	}
	for h, e := range s.byHash {
		if _, still := m[h]; !still {
			if s.revoked == nil || len(s.revoked) >= maxRevoked {
				s.revoked = map[[sha256.Size]byte]entry{}
			}
			s.revoked[h] = e
		}
	}
	for h := range m {
		delete(s.revoked, h)
	}
	s.byHash = m
}
