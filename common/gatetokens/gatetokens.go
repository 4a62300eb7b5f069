// Package gatetokens is the gate tokens file contract (docs/formats.md, Gate tokens file):
// the runner creates and revokes per-task tokens, the gate reads them.
package gatetokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/filelock"
	"terok.dev/sandbox/common/jsonobj"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/tokenid"
)

// Entry is one token and the task it opens. Raw keeps the whole value object
// so members other writers added survive a rewrite.
type Entry struct {
	Token   string
	Project string
	Task    string
	// Expires is the optional `expires` member (docs/formats.md, Gate
	// tokens file); zero: the token works until revoked.
	Expires time.Time
	// Container and BoundAt are the optional binding (members `container`
	// and `bound_at`, docs/formats.md, Gate tokens file): the token dies
	// when that container's end is recorded at or after BoundAt
	// (common/taskend). Empty: no binding.
	Container string
	BoundAt   time.Time
	Raw       json.RawMessage
}

// Expired reports whether the entry's expiry has passed at now.
func (e Entry) Expired(now time.Time) bool {
	return !e.Expires.IsZero() && !now.Before(e.Expires)
}

// parseExpires reads the optional expires member: absent or null is no
// expiry; anything but an RFC 3339 string is an error, so the entry is
// skipped (a token whose expiry cannot be read does not work).
func parseExpires(raw json.RawMessage) (time.Time, error) {
	if raw == nil || string(raw) == "null" {
		return time.Time{}, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return time.Time{}, err
	}
	return time.Parse(time.RFC3339, v)
}

// parseBinding reads the optional binding: both members absent (or null) is
// none; a valid container name with an RFC 3339 bound_at is one; anything
// else is an error, so the entry is skipped (a token whose binding cannot be
// read does not work).
func parseBinding(rawContainer, rawBound json.RawMessage) (string, time.Time, error) {
	absent := func(r json.RawMessage) bool { return r == nil || string(r) == "null" }
	if absent(rawContainer) && absent(rawBound) {
		return "", time.Time{}, nil
	}
	var container, bound string
	if json.Unmarshal(rawContainer, &container) != nil || json.Unmarshal(rawBound, &bound) != nil {
		return "", time.Time{}, errors.New("binding: container and bound_at must both be strings")
	}
	if err := names.ValidateContainerName(container); err != nil {
		return "", time.Time{}, err
	}
	at, err := time.Parse(time.RFC3339Nano, bound)
	if err != nil {
		return "", time.Time{}, err
	}
	return container, at, nil
}

// Parse reads a tokens file tolerantly (docs/formats.md, Gate tokens file). Invalid JSON or a non-object
// top level returns an error (the caller then knows no tokens); entries whose
// value is not an object or lacks a string project/task are dropped and
// counted in skipped.
func Parse(data []byte) (entries []Entry, skipped int, err error) {
	members, err := jsonobj.Parse(data)
	if err != nil {
		return nil, 0, err
	}
	for _, m := range members {
		var v map[string]json.RawMessage
		if json.Unmarshal(m.Value, &v) != nil || v == nil {
			skipped++
			continue
		}
		var project, task string
		if json.Unmarshal(v["project"], &project) != nil || json.Unmarshal(v["task"], &task) != nil {
			skipped++
			continue
		}
		expires, err := parseExpires(v["expires"])
		if err != nil {
			skipped++
			continue
		}
		container, bound, err := parseBinding(v["container"], v["bound_at"])
		if err != nil {
			skipped++
			continue
		}
		entries = append(entries, Entry{Token: m.Key, Project: project, Task: task, Expires: expires,
			Container: container, BoundAt: bound, Raw: m.Value})
	}
	return entries, skipped, nil
}

// Store operates on one tokens file and its lock file.
type Store struct {
	file, lock string
	log        *slog.Logger
}

// NewStore returns the store of cfg's gate.
func NewStore(cfg config.Config, log *slog.Logger) *Store {
	return Open(cfg.GateTokenFile(), cfg.GateTokenLock(), log)
}

// Open returns a store for explicit paths.
func Open(file, lock string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{file: file, lock: lock, log: log}
}

// Path is the tokens file.
func (s *Store) Path() string { return s.file }

// ValidTask reports whether a task id may be stored: the name rule of
// common/names (docs/runner.md, Names), as task ids become parts of paths
// and podman names elsewhere.
func ValidTask(task string) bool { return names.ValidateTaskID(task) == nil }

// Create adds a token for the task t under the exclusive lock and returns it.
func (s *Store) Create(t names.TaskRef) (string, error) {
	return s.CreateExpiring(t, time.Time{})
}

// CreateExpiring is Create with an expiry (zero: none), stored as the
// entry's `expires` member in RFC 3339, UTC, whole seconds.
func (s *Store) CreateExpiring(t names.TaskRef, expires time.Time) (string, error) {
	return s.CreateBound(t, "", expires)
}

// CreateBound is CreateExpiring with a binding to container ("" : none):
// the entry gets `container` and `bound_at` (now, UTC, nanoseconds), so the
// token dies with that container (docs/security-model.md, Tokens that die
// with their task).
func (s *Store) CreateBound(t names.TaskRef, container string, expires time.Time) (string, error) {
	project, task := t.Project, t.Task
	if container != "" {
		if err := names.ValidateContainerName(container); err != nil {
			return "", fmt.Errorf("create gate token: %w", err)
		}
	}
	if err := names.ValidateProjectID(project); err != nil {
		return "", fmt.Errorf("create gate token: %w", err)
	}
	if err := names.ValidateTaskID(task); err != nil {
		return "", fmt.Errorf("create gate token: %w", err)
	}
	tok, err := tokenid.New(tokenid.GatePrefix)
	if err != nil {
		return "", err
	}
	fields := map[string]string{"project": project, "task": task}
	if !expires.IsZero() {
		expires = expires.Truncate(time.Second).UTC()
		fields["expires"] = expires.Format(time.RFC3339)
	}
	var bound time.Time
	if container != "" {
		bound = time.Now().UTC()
		fields["container"] = container
		fields["bound_at"] = bound.Format(time.RFC3339Nano)
	}
	value, err := json.Marshal(fields)
	if err != nil {
		return "", err
	}
	err = s.modify(func(entries []Entry) ([]Entry, bool) {
		return append(entries, Entry{Token: tok, Project: project, Task: task, Expires: expires,
			Container: container, BoundAt: bound, Raw: value}), true
	})
	if err != nil {
		return "", fmt.Errorf("create gate token for %s/%s: %w", project, task, err)
	}
	return tok, nil
}

// Revoke removes every token of task t and returns how many went. The
// file is not rewritten when nothing matched; a missing file is a no-op.
func (s *Store) Revoke(t names.TaskRef) (int, error) {
	if _, err := os.Stat(s.file); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	removed := 0
	err := s.modify(func(entries []Entry) ([]Entry, bool) {
		kept := entries[:0:0]
		for _, e := range entries {
			if e.Project == t.Project && e.Task == t.Task {
				removed++
				continue
			}
			kept = append(kept, e)
		}
		return kept, removed > 0
	})
	if err != nil {
		return 0, fmt.Errorf("revoke gate tokens of %s: %w", t, err)
	}
	return removed, nil
}

// modify is the locked read-modify-write cycle. change returns the new entry
// list and whether anything changed.
func (s *Store) modify(change func([]Entry) ([]Entry, bool)) error {
	if err := atomicfile.MkdirPrivate(filepath.Dir(s.file)); err != nil {
		return err
	}
	lk, err := filelock.Exclusive(s.lock)
	if err != nil {
		return err
	}
	defer lk.Close()
	entries, err := s.readForWrite()
	if err != nil {
		return err
	}
	next, changed := change(entries)
	if !changed {
		return nil
	}
	members := make([]jsonobj.Member, len(next))
	for i, e := range next {
		members[i] = jsonobj.Member{Key: e.Token, Value: e.Raw}
	}
	data, err := jsonobj.Marshal(members)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.file, data, 0o600)
}

// readForWrite reads the file for a rewrite. An unparseable file is kept as
// tokens.json.corrupt-<unix-ts> before it is replaced, so nothing is lost.
func (s *Store) readForWrite() ([]Entry, error) {
	data, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.file, err)
	}
	entries, skipped, perr := Parse(data)
	if perr != nil {
		backup := fmt.Sprintf("%s.corrupt-%d", s.file, time.Now().Unix())
		if err := atomicfile.WriteFile(backup, data, 0o600); err != nil {
			return nil, fmt.Errorf("%s is not a valid tokens file (%v) and could not be preserved: %w", s.file, perr, err)
		}
		s.log.Warn("gate tokens file was unreadable; kept a copy and starting a new one",
			"file", s.file, "error", perr.Error(), "copy", backup,
			"next", "inspect the copy and re-create the tokens of running tasks")
		return nil, nil
	}
	if skipped > 0 {
		s.log.Warn("gate tokens file has malformed entries; they are dropped on rewrite",
			"file", s.file, "skipped", skipped)
	}
	return entries, nil
}

// List returns the tokens in file order, read without the lock (atomic
// replace makes that safe). A missing file is empty; a corrupt one is an error.
func (s *Store) List() ([]Entry, error) {
	data, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.file, err)
	}
	entries, _, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", s.file, err)
	}
	return entries, nil
}

// Lookup returns the entry of tok; a malformed or unknown token is not found.
func (s *Store) Lookup(tok string) (Entry, bool) {
	if !tokenid.Valid(tokenid.GatePrefix, tok) {
		return Entry{}, false
	}
	entries, err := s.List()
	if err != nil {
		s.log.Warn("cannot read gate tokens; refusing every token", "file", s.file, "error", err.Error())
		return Entry{}, false
	}
	for _, e := range entries {
		if e.Token == tok {
			return e, true
		}
	}
	return Entry{}, false
}
