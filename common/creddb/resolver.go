package creddb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"time"

	"github.com/mattn/go-sqlite3"

	"terok.dev/sandbox/common/tokenid"
)

// resolverCacheMax bounds the per-token cache; a full cache is dropped
// whole (it refills with one query per live token).
const resolverCacheMax = 4096

// Resolver answers Resolve like DB.Resolve, exactly as fresh, but without
// re-running the query and decoding the credential while nothing changed.
//
// Freshness: every call first reads `PRAGMA data_version` on the
// resolver's own read-only connection. That statement opens a read
// transaction, i.e. it sees every transaction committed before the call,
// and its value differs from the previous call's whenever any other
// connection — another process such as the runner CLI, or another
// connection of this process — committed in between. The resolver's
// connection is opened query-only, so no write can escape that check.
// Only when the value is unchanged (and no write went through this DB
// handle, an explicit second invalidation) is a cached answer used; it was
// read after the version it is labelled with, so it is the current row.
//
// Calls are serialised on the one connection (the proxy ran its lookups
// one at a time before as well). The Credential returned is shared between
// calls: callers must not modify it.
type Resolver struct {
	db  *DB
	dsn string

	mu      sync.Mutex
	conn    *sqlite3.SQLiteConn // nil until first use and after an error
	verStmt stmt
	resStmt stmt
	ver     int64  // data_version the cache entries are valid for
	gen     uint64 // db.writes the cache entries are valid for
	cache   map[string]resolved
	cols    []driver.Value // scratch for one result row
	args    []driver.NamedValue
	closed  bool
}

// stmt is a prepared statement of the driver.
type stmt interface {
	driver.Stmt
	driver.StmtQueryContext
}

// resolveColumns is the number of columns resolveQuery returns.
const resolveColumns = 16

type resolved struct {
	info TokenInfo
	cred Credential // nil: no credential row
}

// NewResolver returns a Resolver over d's file. Close it before d.
func (d *DB) NewResolver() *Resolver {
	q := url.Values{}
	q.Set("_busy_timeout", "5000")
	// Provably read-only: every change is made by another connection and
	// therefore moves data_version.
	q.Set("_query_only", "1")
	return &Resolver{
		db:    d,
		dsn:   "file:" + (&url.URL{Path: d.path}).EscapedPath() + "?" + q.Encode(),
		cache: make(map[string]resolved),
		cols:  make([]driver.Value, resolveColumns),
		args:  make([]driver.NamedValue, 1),
	}
}

// Close closes the resolver's connection.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.dropLocked()
}

func (r *Resolver) dropLocked() error {
	r.cache = make(map[string]resolved)
	if r.conn == nil {
		return nil
	}
	if r.verStmt != nil {
		_ = r.verStmt.Close()
	}
	if r.resStmt != nil {
		_ = r.resStmt.Close()
	}
	err := r.conn.Close()
	r.conn, r.verStmt, r.resStmt = nil, nil, nil
	return err
}

func (r *Resolver) openLocked() error {
	c, err := (&sqlite3.SQLiteDriver{}).Open(r.dsn)
	if err != nil {
		return fmt.Errorf("open resolver connection to %s: %w", r.db.path, err)
	}
	r.conn = c.(*sqlite3.SQLiteConn)
	if r.verStmt, err = r.prepareLocked(`PRAGMA data_version`); err != nil {
		_ = r.dropLocked()
		return fmt.Errorf("prepare data_version in %s: %w", r.db.path, err)
	}
	if r.resStmt, err = r.prepareLocked(resolveQuery); err != nil {
		_ = r.dropLocked()
		return fmt.Errorf("prepare token query in %s: %w", r.db.path, err)
	}
	return nil
}

func (r *Resolver) prepareLocked(q string) (stmt, error) {
	s, err := r.conn.Prepare(q)
	if err != nil {
		return nil, err
	}
	qs, ok := s.(stmt)
	if !ok {
		_ = s.Close()
		return nil, fmt.Errorf("driver statement %T cannot query with a context", s)
	}
	return qs, nil
}

// Resolve has DB.Resolve's contract (ErrNotFound for an unknown token, a
// nil Credential for a missing row, an error for a row that is not a JSON
// object). ctx is not consulted: a primary-key lookup is over before a
// cancellation could matter.
func (r *Resolver) Resolve(_ context.Context, tok string) (TokenInfo, Credential, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return TokenInfo{}, nil, errors.New("resolve phantom token: resolver closed")
	}
	if r.conn == nil {
		if err := r.openLocked(); err != nil {
			return TokenInfo{}, nil, err
		}
	}
	// Read before data_version: a write that lands after this load moves
	// data_version or this counter on the next call.
	gen := r.db.writes.Load()
	ver, err := r.dataVersionLocked()
	if err != nil {
		// A broken connection is reopened on the next call.
		_ = r.dropLocked()
		return TokenInfo{}, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	if ver != r.ver || gen != r.gen || len(r.cache) >= resolverCacheMax {
		clear(r.cache)
		r.ver, r.gen = ver, gen
	} else if hit, ok := r.cache[tok]; ok {
		// Expiry passes without a write: checked on every hit.
		if hit.info.Expired(time.Now()) {
			return TokenInfo{}, nil, ErrExpired
		}
		// So does a task's end (a file, not a write to the database).
		if end, gone := r.db.TaskEnd(hit.info); gone {
			return TokenInfo{}, nil, &TaskGoneError{End: end}
		}
		return hit.info, hit.cred, nil
	}
	info, data, rules, qrow, found, err := r.queryLocked(tok)
	if err != nil {
		_ = r.dropLocked()
		return TokenInfo{}, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	if !found {
		// Unknown tokens are not cached: a flood of garbage must not
		// push out the live ones.
		return TokenInfo{}, nil, ErrNotFound
	}
	if info.Expired(time.Now()) {
		return TokenInfo{}, nil, ErrExpired
	}
	if end, gone := r.db.TaskEnd(info); gone {
		return TokenInfo{}, nil, &TaskGoneError{End: end}
	}
	// Not cached when malformed: the proxy refuses the token on every
	// request and logs it each time, until the row is fixed or revoked.
	if info.Allow, info.Deny, info.Scope, err = decodeScope(rules[0], rules[1]); err != nil {
		return info, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	// Likewise: a token whose limits cannot be read never runs unlimited.
	if info.Quota, err = qrow.decode(); err != nil {
		return info, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	var cred Credential
	if data != nil {
		// Sealed values are opened here, once per change of the database,
		// not per request: the decrypted Credential is what is cached.
		if cred, err = r.db.decodeData(CredentialKey{Set: info.CredentialSet, Provider: info.Provider}, data); err != nil {
			return info, nil, err
		}
	}
	r.cache[tok] = resolved{info: info, cred: cred}
	return info, cred, nil
}

func (r *Resolver) dataVersionLocked() (int64, error) {
	// A context without Done: the driver then starts no watcher.
	rows, err := r.verStmt.QueryContext(context.Background(), nil)
	if err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	// Close resets the statement, which ends its read transaction: a
	// statement left open would pin the snapshot.
	defer rows.Close()
	if err := rows.Next(r.cols[:1]); err != nil {
		return 0, fmt.Errorf("read data_version: %w", err)
	}
	v, ok := r.cols[0].(int64)
	if !ok {
		return 0, fmt.Errorf("read data_version: unexpected %T", r.cols[0])
	}
	return v, nil
}

// own copies a driver value that may alias the driver's buffer.
func own(v driver.Value) any {
	if b, ok := v.([]byte); ok {
		return append([]byte(nil), b...)
	}
	return v
}

// queryLocked runs the resolve query; data is nil when the token has no
// credential row.
func (r *Resolver) queryLocked(tok string) (info TokenInfo, data []byte, rules [2]sql.NullString, q quotaRow, found bool, err error) {
	r.args[0] = driver.NamedValue{Ordinal: 1, Value: tok}
	rows, err := r.resStmt.QueryContext(context.Background(), r.args)
	if err != nil {
		return info, nil, rules, q, false, err
	}
	defer rows.Close()
	dest := r.cols[:resolveColumns]
	if err := rows.Next(dest); err != nil {
		if errors.Is(err, io.EOF) {
			return info, nil, rules, q, false, nil
		}
		return info, nil, rules, q, false, err
	}
	var strs [4]string
	for i := range strs {
		if strs[i], err = text(dest[i]); err != nil {
			return info, nil, rules, q, false, err
		}
	}
	info = TokenInfo{Project: strs[0], Task: strs[1], CredentialSet: strs[2], Provider: strs[3]}
	switch v := dest[4].(type) {
	case nil:
	case string:
		data = []byte(v)
	case []byte:
		data = append([]byte(nil), v...) // the driver may reuse its buffer
	default:
		return info, nil, rules, q, false, fmt.Errorf("credential data has type %T", v)
	}
	switch v := dest[5].(type) {
	case nil:
	case int64:
		info.Expires = time.Unix(v, 0).UTC()
	default:
		return info, nil, rules, q, false, fmt.Errorf("token expiry has type %T", v)
	}
	for i := range rules {
		if dest[6+i] == nil {
			continue
		}
		s, err := text(dest[6+i])
		if err != nil {
			return info, nil, rules, q, false, err
		}
		rules[i] = sql.NullString{String: s, Valid: true}
	}
	if dest[8] != nil {
		c, err := text(dest[8])
		if err != nil {
			return info, nil, rules, q, false, err
		}
		at, ok := dest[9].(int64)
		if !ok {
			return info, nil, rules, q, false, fmt.Errorf("token binding time has type %T", dest[9])
		}
		info.Container, info.BoundAt = c, time.Unix(0, at).UTC()
	}
	// Copied before the rows close: the driver may reuse its buffers.
	c := dest[10:resolveColumns]
	q = quotaRow{Token: own(c[0]), MaxRequests: own(c[1]), MaxBytes: own(c[2]),
		UsedRequests: own(c[3]), UsedBytes: own(c[4]), UpdatedAt: own(c[5])}
	return info, data, rules, q, true, nil
}

func text(v driver.Value) (string, error) {
	switch s := v.(type) {
	case string:
		return s, nil
	case []byte:
		return string(s), nil
	}
	return "", fmt.Errorf("token column has type %T", v)
}
