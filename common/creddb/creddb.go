// Package creddb is the credentials database contract (docs/formats.md, Credentials database):
// stored credentials per (credential set, provider) and per-task phantom
// tokens. Table and column names are fixed; other tools query them directly.
package creddb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/tokenid"
)

// Schema is exactly the specified DDL (docs/formats.md, Credentials database).
const Schema = `CREATE TABLE IF NOT EXISTS credentials (
    credential_set TEXT NOT NULL,
    provider       TEXT NOT NULL,
    data           TEXT NOT NULL,
    PRIMARY KEY (credential_set, provider)
);
CREATE TABLE IF NOT EXISTS proxy_tokens (
    token          TEXT PRIMARY KEY,
    project        TEXT NOT NULL,
    task           TEXT NOT NULL,
    credential_set TEXT NOT NULL,
    provider       TEXT NOT NULL
);`

// ExpirySchema holds the optional expiry of tokens (docs/formats.md,
// Credentials database): a table of its own, so proxy_tokens stays exactly
// the DDL other tools read, and a tool that knows nothing of it still sees
// every token (as never expiring).
const ExpirySchema = `CREATE TABLE IF NOT EXISTS token_expiry (
    token      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);`

// ScopeSchema holds a token's own allow/deny rules (docs/formats.md,
// Credentials database), which narrow its route's scope: a table of its
// own for the same reason as token_expiry. allow and deny are JSON arrays
// of routes.json scope entries.
const ScopeSchema = `CREATE TABLE IF NOT EXISTS token_scope (
    token TEXT PRIMARY KEY,
    allow TEXT NOT NULL,
    deny  TEXT NOT NULL
);`

// BindingSchema holds the optional binding of a token to its task's
// container (docs/formats.md, Credentials database): a table of its own for
// the reason ExpirySchema is one. bound_at is Unix nanoseconds.
const BindingSchema = `CREATE TABLE IF NOT EXISTS token_binding (
    token     TEXT PRIMARY KEY,
    container TEXT NOT NULL,
    bound_at  INTEGER NOT NULL
);`

// QuotaSchema holds a token's optional quota and the usage the proxy
// counted against it (docs/formats.md, Credentials database): a table of
// its own for the reason ExpirySchema is one. A NULL limit is no limit of
// that kind; updated_at is Unix seconds of the last usage write.
const QuotaSchema = `CREATE TABLE IF NOT EXISTS token_quota (
    token              TEXT PRIMARY KEY,
    max_requests       INTEGER,
    max_response_bytes INTEGER,
    used_requests      INTEGER NOT NULL DEFAULT 0,
    used_bytes         INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL
);`

// DefaultSet is the credential set used unless an orchestrator picks another.
const DefaultSet = "default"

// SSHProvider marks phantom tokens meant for the SSH agent handshake.
const SSHProvider = "ssh"

// StaticMarker is the fixed phantom value accepted as the default set's
// claude credential (docs/formats.md, Phantom tokens). It is never stored.
const StaticMarker = "terok-proxy-phantom-token:credential-proxy-handles-real-auth"

// ErrNotFound is returned by lookups that find no row.
var ErrNotFound = errors.New("not found")

// DB is an open credentials database.
type DB struct {
	x    *sqlx.DB
	path string
	// Prepared once: the proxy resolves a token on every request.
	resolveStmt *sqlx.Stmt
	loadStmt    *sqlx.Stmt
	// writes counts committed writes through this handle; a Resolver
	// drops its cache when it moves (see Resolver).
	writes atomic.Uint64
	// vault seals and opens the data column (docs/secrets-at-rest.md): the
	// one of the database's directory unless SetVault replaced it; nil is
	// plaintext mode.
	vault *secretstore.Vault
	// ends is where task ends are recorded (SetTaskEnds); nil: every
	// bound token counts as gone (a binding nobody checks would mislead).
	ends *taskend.Watcher
}

// SetTaskEnds makes Resolve (and Resolvers of d) and TaskGone consult w for
// tokens bound to a container (docs/security-model.md, Tokens that die
// with their task). Call it right after Open, before the handle is shared.
func (d *DB) SetTaskEnds(w *taskend.Watcher) { d.ends = w }

// TaskGone reports whether ti is bound to a container whose end is on
// record since the binding (always true for a bound token when no
// watcher was set). An unbound token is never gone.
func (d *DB) TaskGone(ti TokenInfo) bool {
	_, gone := d.TaskEnd(ti)
	return gone
}

// TaskEnd is TaskGone with how the task ended (taskend reasons;
// "unchecked" when no watcher was set).
func (d *DB) TaskEnd(ti TokenInfo) (string, bool) {
	if ti.Container == "" {
		return "", false
	}
	if d.ends == nil {
		return "unchecked", true
	}
	e, gone := d.ends.Gone(ti.Container, ti.BoundAt)
	return e.Reason, gone
}

// SetVault replaces the vault Open attached (the keystore of the
// database's directory, KEK from the kernel keyring), e.g. with one whose
// KEK the caller derived. Call it right after Open, before the handle (or a
// Resolver of it) is shared.
func (d *DB) SetVault(v *secretstore.Vault) { d.vault = v }

// Vault is the handle's vault (nil: plaintext mode).
func (d *DB) Vault() *secretstore.Vault { return d.vault }

// decodeData turns a data column value into a Credential, opening it first
// when it is sealed. Errors never carry the value.
func (d *DB) decodeData(key CredentialKey, data []byte) (Credential, error) {
	if secretstore.IsSealed(data) {
		plain, err := d.vault.Open(data, secretstore.CredentialAD(key))
		if err != nil {
			return nil, fmt.Errorf("credential %s is encrypted: %w", key, err)
		}
		defer clear(plain)
		data = plain
	}
	c, err := DecodeCredential(data)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", key, err)
	}
	return c, nil
}

// encodeData is the data column value of c for the row key under w:
// sealed when the store is encrypted, JSON text in plaintext mode.
func encodeData(w *secretstore.Writer, key CredentialKey, c Credential) (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	out, err := w.Encode(b, secretstore.CredentialAD(key))
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// resolveQuery is the one query behind Resolve: token and credential.
const resolveQuery = `SELECT t.project, t.task, t.credential_set, t.provider, c.data, e.expires_at, s.allow, s.deny,
		b.container, b.bound_at, ` + quotaColumns + `
		FROM proxy_tokens t LEFT JOIN credentials c
		ON c.credential_set = t.credential_set AND c.provider = t.provider
		LEFT JOIN token_expiry e ON e.token = t.token
		LEFT JOIN token_scope s ON s.token = t.token
		LEFT JOIN token_binding b ON b.token = t.token
		LEFT JOIN token_quota q ON q.token = t.token
		WHERE t.token = ?`

// quotaColumns are token_quota's columns in a join on alias q; q_token is
// NULL when the token has no row.
const quotaColumns = `q.token AS q_token, q.max_requests, q.max_response_bytes, q.used_requests, q.used_bytes, q.updated_at`

// quotaRow holds token_quota's columns of a join as the driver returns
// them: another tool may have written anything, and quota.Check says
// whether it is usable.
type quotaRow struct {
	Token        any `db:"q_token"`
	MaxRequests  any `db:"max_requests"`
	MaxBytes     any `db:"max_response_bytes"`
	UsedRequests any `db:"used_requests"`
	UsedBytes    any `db:"used_bytes"`
	UpdatedAt    any `db:"updated_at"`
}

// ErrBadQuota is returned (with the TokenInfo filled) for a token whose
// token_quota row is malformed: callers refuse the token rather than let
// it run without a limit.
var ErrBadQuota = errors.New("phantom token's quota row is malformed")

// decode returns the row's quota (nil: no row).
func (q quotaRow) decode() (*quota.State, error) {
	if q.Token == nil {
		return nil, nil
	}
	st, err := quota.Check(q.MaxRequests, q.MaxBytes, q.UsedRequests, q.UsedBytes, q.UpdatedAt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadQuota, err)
	}
	return &st, nil
}

// TokenInfo is what a phantom token stands for.
type TokenInfo struct {
	Project       string `db:"project" json:"project"`
	Task          string `db:"task" json:"task"`
	CredentialSet string `db:"credential_set" json:"credential_set"`
	Provider      string `db:"provider" json:"provider"`
	// Expires is when the token stops working; zero: never. LookupToken
	// and Resolve fill it; Resolve refuses an expired token (ErrExpired).
	Expires time.Time `db:"-" json:"expires,omitzero"`
	// Allow and Deny are the token's own scope rules (token_scope; none:
	// the route's scope alone); Scope is them compiled. LookupToken and
	// Resolve fill them; a row that does not parse is ErrBadScope.
	Allow []scope.Rule `db:"-" json:"allow,omitempty"`
	Deny  []scope.Rule `db:"-" json:"deny,omitempty"`
	Scope scope.Scope  `db:"-" json:"-"`
	// Container and BoundAt are the token's binding (token_binding); ""
	// none. LookupToken and Resolve fill them; Resolve refuses a token
	// whose container is gone (ErrTaskGone, see DB.TaskGone).
	Container string    `db:"-" json:"container,omitempty"`
	BoundAt   time.Time `db:"-" json:"bound_at,omitzero"`
	// Quota is the token's quota with the usage last written
	// (token_quota); nil: none. LookupToken and Resolve fill it; a row
	// that does not pass quota.Check is ErrBadQuota. The proxy counts the
	// live usage in memory (docs/credential-proxy.md, Token quotas).
	Quota *quota.State `db:"-" json:"quota,omitempty"`
}

// ErrBadScope is returned (with the TokenInfo filled) for a token whose
// token_scope row cannot be parsed: callers refuse the token rather than
// run it with its route's wider scope.
var ErrBadScope = errors.New("phantom token's scope row is malformed")

// decodeScope parses a token_scope row (both NULL: no row).
func decodeScope(allow, deny sql.NullString) (a, d []scope.Rule, s scope.Scope, err error) {
	if !allow.Valid && !deny.Valid {
		return nil, nil, scope.Scope{}, nil
	}
	if err := json.Unmarshal([]byte(allow.String), &a); err != nil {
		return nil, nil, scope.Scope{}, fmt.Errorf("%w: allow: %v", ErrBadScope, err)
	}
	if err := json.Unmarshal([]byte(deny.String), &d); err != nil {
		return nil, nil, scope.Scope{}, fmt.Errorf("%w: deny: %v", ErrBadScope, err)
	}
	if s, err = scope.New(a, d); err != nil {
		return nil, nil, scope.Scope{}, fmt.Errorf("%w: %v", ErrBadScope, err)
	}
	return a, d, s, nil
}

// bindingRow holds token_binding's nullable columns of a join.
type bindingRow struct {
	Container sql.NullString `db:"container"`
	BoundAt   sql.NullInt64  `db:"bound_at"`
}

func (b bindingRow) apply(ti *TokenInfo) {
	if b.Container.Valid && b.BoundAt.Valid {
		ti.Container, ti.BoundAt = b.Container.String, time.Unix(0, b.BoundAt.Int64).UTC()
	}
}

// Expired reports whether the token has an expiry at or before now.
func (ti TokenInfo) Expired(now time.Time) bool {
	return !ti.Expires.IsZero() && !now.Before(ti.Expires)
}

// Open opens (creating it and its 0700 parent if needed) the database with
// WAL, foreign keys and a 5 s busy timeout, creates the schema and forces
// the file to mode 0600.
func Open(path string) (*DB, error) {
	if err := atomicfile.MkdirPrivate(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("open credentials db %s: %w", path, err)
	}
	// Create the file 0600 before SQLite does, so it never exists world-readable.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		_ = f.Close()
	} else {
		return nil, fmt.Errorf("open credentials db %s: %w", path, err)
	}
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_foreign_keys", "on")
	q.Set("_busy_timeout", "5000")
	q.Set("_txlock", "immediate")
	// Zero deleted and overwritten content, so a replaced or re-sealed
	// credential leaves no plaintext in free pages (docs/secrets-at-rest.md).
	q.Set("_secure_delete", "on")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	x, err := sqlx.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open credentials db %s: %w", path, err)
	}
	// Daemons serve many requests at once; keep enough idle connections that
	// SQLite files are not reopened per query under load.
	x.SetMaxIdleConns(8)
	// The keystore lives beside the database (docs/secrets-at-rest.md):
	// every handle uses it, so no caller can write plaintext into an
	// encrypted store by forgetting to ask for it.
	db := &DB{x: x, path: path, vault: secretstore.OpenVault(filepath.Dir(path))}
	if _, err := x.Exec(Schema + "\n" + ExpirySchema + "\n" + ScopeSchema + "\n" + BindingSchema + "\n" + QuotaSchema); err != nil {
		_ = x.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	if db.resolveStmt, err = x.Preparex(resolveQuery); err != nil {
		_ = x.Close()
		return nil, fmt.Errorf("prepare token query in %s: %w", path, err)
	}
	if db.loadStmt, err = x.Preparex(`SELECT data FROM credentials WHERE credential_set = ? AND provider = ?`); err != nil {
		_ = x.Close()
		return nil, fmt.Errorf("prepare credential query in %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = x.Close()
			return nil, fmt.Errorf("chmod 0600 %s: %w", p, err)
		}
	}
	return db, nil
}

// Path is the database file.
func (d *DB) Path() string { return d.path }

// Close closes the database.
func (d *DB) Close() error {
	_ = d.resolveStmt.Close()
	_ = d.loadStmt.Close()
	return d.x.Close()
}

// Credential is the decoded data column: a JSON object whose members other
// tools may extend, so it is kept whole. Numbers stay json.Number to survive
// a rewrite unchanged.
type Credential map[string]any

// String returns member key when it is a string.
func (c Credential) String(key string) string {
	s, _ := c[key].(string)
	return s
}

// Number returns member key when it is a JSON number.
func (c Credential) Number(key string) (float64, bool) {
	switch v := c[key].(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	case float64:
		return v, true
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// DecodeCredential parses a data column value; it must be a JSON object.
func DecodeCredential(data []byte) (Credential, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var c Credential
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("credential data is not a JSON object: %w", err)
	}
	if c == nil {
		return nil, errors.New("credential data is not a JSON object")
	}
	return c, nil
}

// CredentialKey names one credential row. A struct, not two strings side by
// side: the provider and the set were once swapped across one call hop
// without any compiler noticing (see TokenSpec). It is names.CredentialKey,
// the type secretstore.CredentialAD binds a sealed value to.
type CredentialKey = names.CredentialKey

// StoreCredential inserts or replaces the row of key.
func (d *DB) StoreCredential(ctx context.Context, key CredentialKey, data Credential) error {
	set, provider := key.Set, key.Provider
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	if set == "" || provider == "" {
		return errors.New("store credential: credential set and provider must not be empty")
	}
	if data == nil {
		return errors.New("store credential: data must be a JSON object")
	}
	w, err := d.vault.BeginWrite()
	if err != nil {
		return fmt.Errorf("store credential %s/%s: %w", set, provider, err)
	}
	defer w.Close() // after the write: a key rotation waits for it
	value, err := encodeData(w, key, data)
	if err != nil {
		return fmt.Errorf("store credential %s/%s: %w", set, provider, err)
	}
	_, err = d.x.ExecContext(ctx,
		`INSERT OR REPLACE INTO credentials (credential_set, provider, data) VALUES (?, ?, ?)`,
		set, provider, value)
	if err != nil {
		return fmt.Errorf("store credential %s/%s: %w", set, provider, err)
	}
	return nil
}

// LoadCredential returns the credential of key or ErrNotFound.
func (d *DB) LoadCredential(ctx context.Context, key CredentialKey) (Credential, error) {
	set, provider := key.Set, key.Provider
	var data string
	err := d.loadStmt.GetContext(ctx, &data, set, provider)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load credential %s/%s: %w", set, provider, err)
	}
	c, err := d.decodeData(key, []byte(data))
	if err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	return c, nil
}

// ListCredentials returns the providers of set in ascending order.
func (d *DB) ListCredentials(ctx context.Context, set string) ([]string, error) {
	out := []string{}
	err := d.x.SelectContext(ctx, &out,
		`SELECT provider FROM credentials WHERE credential_set = ? ORDER BY provider ASC`, set)
	if err != nil {
		return nil, fmt.Errorf("list credentials of set %s: %w", set, err)
	}
	return out, nil
}

// DeleteCredential removes key's row; deleting a missing row is fine.
func (d *DB) DeleteCredential(ctx context.Context, key CredentialKey) error {
	set, provider := key.Set, key.Provider
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	_, err := d.x.ExecContext(ctx,
		`DELETE FROM credentials WHERE credential_set = ? AND provider = ?`, set, provider)
	if err != nil {
		return fmt.Errorf("delete credential %s/%s: %w", set, provider, err)
	}
	return nil
}

// TokenSpec says what a phantom token is issued for. A struct, not four
// strings side by side: the provider and the set were once swapped across
// one call hop without any compiler noticing.
type TokenSpec struct {
	Project, Task string
	// Provider is the route name ("claude", "gh", ..., or SSHProvider).
	Provider string
	// Set is the credential set (DefaultSet unless the caller keeps several).
	Set string
	// Expires, when not zero, is when the token stops working (stored in
	// token_expiry; docs/formats.md, Credentials database).
	Expires time.Time
	// Allow and Deny, when any is set, narrow the route's scope for this
	// token (stored in token_scope; docs/credential-proxy.md, Scopes).
	Allow, Deny []scope.Rule
	// Container, when not empty, binds the token to that container: it
	// dies when the container's end is recorded (token_binding;
	// docs/security-model.md, Tokens that die with their task).
	Container string
	// Quota, when set, limits the requests and/or response bytes the
	// proxy lets the token use (token_quota; docs/credential-proxy.md,
	// Token quotas). Negative limits are refused.
	Quota quota.Limits
}

// ErrTaskGone is returned by Resolve for a token bound to a container whose
// end is on record. Like ErrExpired it is an ErrNotFound.
var ErrTaskGone = fmt.Errorf("%w: phantom token's container is gone", ErrNotFound)

// TaskGoneError is the ErrTaskGone Resolve returns, with how the task
// ended (taskend reasons; docs/security-model.md, Tokens that die with
// their task).
type TaskGoneError struct{ End string }

func (e *TaskGoneError) Error() string { return ErrTaskGone.Error() + " (" + e.End + ")" }

// Is makes a TaskGoneError an ErrTaskGone (and so an ErrNotFound).
func (e *TaskGoneError) Is(target error) bool { return errors.Is(ErrTaskGone, target) }

// ErrExpired is returned by Resolve for a token whose expiry has passed.
// It is an ErrNotFound, so a caller that knows only that refuses it like
// a revoked token.
var ErrExpired = fmt.Errorf("%w: phantom token expired", ErrNotFound)

// expiresAt converts a token_expiry value (Unix seconds; NULL: none).
func expiresAt(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(v.Int64, 0).UTC()
}

// CreateToken issues a phantom token for spec.Project/spec.Task that stands
// for the credential spec.Set/spec.Provider.
func (d *DB) CreateToken(ctx context.Context, spec TokenSpec) (string, error) {
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	project, task, set, provider := spec.Project, spec.Task, spec.Set, spec.Provider
	// Project and task ids follow the one name rule (docs/runner.md, Names):
	// they reappear in logs, revocations and other components' paths.
	if err := names.ValidateProjectID(project); err != nil {
		return "", fmt.Errorf("create phantom token: %w", err)
	}
	if err := names.ValidateTaskID(task); err != nil {
		return "", fmt.Errorf("create phantom token: %w", err)
	}
	if spec.Container != "" {
		if err := names.ValidateContainerName(spec.Container); err != nil {
			return "", fmt.Errorf("create phantom token: %w", err)
		}
	}
	for _, f := range []struct{ name, v string }{{"credential set", set}, {"provider", provider}} {
		if f.v == "" {
			return "", fmt.Errorf("create phantom token: %s must not be empty", f.name)
		}
	}
	// Refused here, not at the proxy: a token whose rules do not compile
	// would be refused on every request.
	if _, err := scope.New(spec.Allow, spec.Deny); err != nil {
		return "", fmt.Errorf("create phantom token: scope: %w", err)
	}
	if err := spec.Quota.Validate(); err != nil {
		return "", fmt.Errorf("create phantom token: quota: %w", err)
	}
	if spec.Quota.Set() && provider == SSHProvider {
		// A limit nobody enforces would mislead: the agent counts nothing.
		return "", errors.New("create phantom token: quota: the SSH agent does not enforce quotas; only proxied HTTP requests are counted")
	}
	var allowJSON, denyJSON []byte
	if len(spec.Allow)+len(spec.Deny) > 0 {
		allowJSON, _ = json.Marshal(nonNil(spec.Allow))
		denyJSON, _ = json.Marshal(nonNil(spec.Deny))
	}
	tok, err := tokenid.New(tokenid.PhantomPrefix)
	if err != nil {
		return "", err
	}
	err = func() error {
		tx, err := d.x.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO proxy_tokens (token, project, task, credential_set, provider) VALUES (?, ?, ?, ?, ?)`,
			tok, project, task, set, provider); err != nil {
			return err
		}
		if !spec.Expires.IsZero() {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO token_expiry (token, expires_at) VALUES (?, ?)`,
				tok, spec.Expires.Unix()); err != nil {
				return err
			}
		}
		if allowJSON != nil {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO token_scope (token, allow, deny) VALUES (?, ?, ?)`,
				tok, string(allowJSON), string(denyJSON)); err != nil {
				return err
			}
		}
		if spec.Quota.Set() {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO token_quota
				(token, max_requests, max_response_bytes, used_requests, used_bytes, updated_at) VALUES (?, ?, ?, 0, 0, ?)`,
				tok, nullIfZero(spec.Quota.MaxRequests), nullIfZero(spec.Quota.MaxResponseBytes), time.Now().Unix()); err != nil {
				return err
			}
		}
		if spec.Container != "" {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO token_binding (token, container, bound_at) VALUES (?, ?, ?)`,
				tok, spec.Container, time.Now().UnixNano()); err != nil {
				return err
			}
		}
		return tx.Commit()
	}()
	if err != nil {
		return "", fmt.Errorf("create phantom token for %s/%s (%s): %w", project, task, provider, err)
	}
	return tok, nil
}

// nullIfZero stores 0 (no limit) as NULL.
func nullIfZero(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// nonNil keeps an empty list "[]" in JSON, never "null".
func nonNil(r []scope.Rule) []scope.Rule {
	if r == nil {
		return []scope.Rule{}
	}
	return r
}

// LookupToken returns what tok stands for, with its expiry (Expires; the
// caller decides, see TokenInfo.Expired) and scope, or ErrNotFound; a
// malformed scope row is ErrBadScope with the rest of the TokenInfo.
func (d *DB) LookupToken(ctx context.Context, tok string) (TokenInfo, error) {
	var row struct {
		TokenInfo
		bindingRow
		quotaRow
		ExpiresAt sql.NullInt64  `db:"expires_at"`
		Allow     sql.NullString `db:"allow"`
		Deny      sql.NullString `db:"deny"`
	}
	err := d.x.GetContext(ctx, &row,
		`SELECT t.project, t.task, t.credential_set, t.provider, e.expires_at, s.allow, s.deny, b.container, b.bound_at, `+quotaColumns+`
		   FROM proxy_tokens t LEFT JOIN token_expiry e ON e.token = t.token
		   LEFT JOIN token_scope s ON s.token = t.token
		   LEFT JOIN token_binding b ON b.token = t.token
		   LEFT JOIN token_quota q ON q.token = t.token WHERE t.token = ?`, tok)
	if errors.Is(err, sql.ErrNoRows) {
		return TokenInfo{}, ErrNotFound
	}
	if err != nil {
		return TokenInfo{}, fmt.Errorf("look up phantom token %s: %w", tokenid.Show(tok), err)
	}
	ti := row.TokenInfo
	ti.Expires = expiresAt(row.ExpiresAt)
	row.bindingRow.apply(&ti)
	if ti.Allow, ti.Deny, ti.Scope, err = decodeScope(row.Allow, row.Deny); err != nil {
		return ti, fmt.Errorf("look up phantom token %s: %w", tokenid.Show(tok), err)
	}
	if ti.Quota, err = row.quotaRow.decode(); err != nil {
		return ti, fmt.Errorf("look up phantom token %s: %w", tokenid.Show(tok), err)
	}
	return ti, nil
}

// CredentialRow is one stored credential with its data text, for callers
// that must see every row (the OAuth refresh walks all sets).
type CredentialRow struct {
	Set      string `db:"credential_set"`
	Provider string `db:"provider"`
	Data     string `db:"data"`
	// Err is why a sealed value could not be opened (Data is then "").
	Err error `db:"-"`
}

// AllCredentials returns every row of every set, ordered by set then
// provider, with sealed values opened (in memory only). A row that is not
// a JSON object, or whose sealed value does not open (Err), is the caller's
// to skip (and report).
func (d *DB) AllCredentials(ctx context.Context) ([]CredentialRow, error) {
	out, err := d.RawCredentials(ctx)
	if err != nil {
		return nil, err
	}
	for i := range out {
		r := &out[i]
		if !secretstore.IsSealed([]byte(r.Data)) {
			continue
		}
		plain, err := d.vault.Open([]byte(r.Data), secretstore.CredentialAD(CredentialKey{Set: r.Set, Provider: r.Provider}))
		if err != nil {
			r.Data, r.Err = "", fmt.Errorf("credential %s/%s is encrypted: %w", r.Set, r.Provider, err)
			continue
		}
		r.Data = string(plain)
		clear(plain)
	}
	return out, nil
}

// RawCredentials is AllCredentials with the data column as stored (sealed
// values stay sealed), for status counts and re-sealing.
func (d *DB) RawCredentials(ctx context.Context) ([]CredentialRow, error) {
	out := []CredentialRow{}
	err := d.x.SelectContext(ctx, &out,
		`SELECT credential_set, provider, data FROM credentials ORDER BY credential_set, provider`)
	if err != nil {
		return nil, fmt.Errorf("list all credentials: %w", err)
	}
	return out, nil
}

// RewriteAll replaces every credential value with what change returns for
// it, in one transaction: either every row is rewritten or none is (a
// crash half-way leaves the database as it was). change sees the stored
// value and reports whether it changed it; it must not fail on one row
// and leave the others, so any error aborts the whole rewrite. The count
// of changed rows is returned. Used by `credentials migrate` and
// `credentials rotate-key` (docs/secrets-at-rest.md, Rotation).
func (d *DB) RewriteAll(ctx context.Context, change func(key CredentialKey, value []byte) ([]byte, bool, error)) (int, error) {
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("rewrite credentials: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows := []CredentialRow{}
	if err := tx.SelectContext(ctx, &rows, `SELECT credential_set, provider, data FROM credentials`); err != nil {
		return 0, fmt.Errorf("rewrite credentials: %w", err)
	}
	n := 0
	for _, r := range rows {
		out, changed, err := change(CredentialKey{Set: r.Set, Provider: r.Provider}, []byte(r.Data))
		if err != nil {
			return 0, fmt.Errorf("credential %s/%s: %w; nothing was changed", r.Set, r.Provider, err)
		}
		if !changed {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE credentials SET data = ? WHERE credential_set = ? AND provider = ?`,
			string(out), r.Set, r.Provider); err != nil {
			return 0, fmt.Errorf("rewrite credential %s/%s: %w", r.Set, r.Provider, err)
		}
		n++
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("rewrite credentials: %w", err)
	}
	return n, nil
}

// Compact moves the write-ahead log into the database and truncates it,
// then rebuilds the file without free pages, so no superseded value
// (plaintext before a migration, a retired key's ciphertext after a
// rotation) stays in the WAL or in unused pages. It reports whether the
// WAL could be fully checkpointed: another process reading at that moment
// keeps old frames alive (stop the daemons and run it again).
func (d *DB) Compact(ctx context.Context) (complete bool, err error) {
	checkpoint := func() (bool, error) {
		var busy, logFrames, done int
		row := d.x.QueryRowxContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		if err := row.Scan(&busy, &logFrames, &done); err != nil {
			return false, fmt.Errorf("checkpoint %s: %w", d.path, err)
		}
		return busy == 0, nil
	}
	if _, err := checkpoint(); err != nil {
		return false, err
	}
	if _, err := d.x.ExecContext(ctx, `VACUUM`); err != nil {
		return false, fmt.Errorf("vacuum %s: %w", d.path, err)
	}
	return checkpoint()
}

// Resolve answers in one query what a phantom token stands for and the
// credential it selects. ErrNotFound means an unknown token (ErrExpired,
// also an ErrNotFound, an expired one); a known token
// whose credential row is missing returns a nil Credential and no error; a
// row whose data is not a JSON object is an error. Nothing is cached, so a
// revocation or a changed credential acts on the next call.
func (d *DB) Resolve(ctx context.Context, tok string) (TokenInfo, Credential, error) {
	var row struct {
		TokenInfo
		bindingRow
		quotaRow
		Data      sql.NullString `db:"data"`
		ExpiresAt sql.NullInt64  `db:"expires_at"`
		Allow     sql.NullString `db:"allow"`
		Deny      sql.NullString `db:"deny"`
	}
	err := d.resolveStmt.GetContext(ctx, &row, tok)
	if errors.Is(err, sql.ErrNoRows) {
		return TokenInfo{}, nil, ErrNotFound
	}
	if err != nil {
		return TokenInfo{}, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	row.TokenInfo.Expires = expiresAt(row.ExpiresAt)
	if row.TokenInfo.Expired(time.Now()) {
		// Nothing of it: callers treat a TokenInfo with an error as a
		// known token whose credential failed.
		return TokenInfo{}, nil, ErrExpired
	}
	row.bindingRow.apply(&row.TokenInfo)
	if end, gone := d.TaskEnd(row.TokenInfo); gone {
		return TokenInfo{}, nil, &TaskGoneError{End: end}
	}
	if row.TokenInfo.Allow, row.TokenInfo.Deny, row.TokenInfo.Scope, err = decodeScope(row.Allow, row.Deny); err != nil {
		return row.TokenInfo, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	if row.TokenInfo.Quota, err = row.quotaRow.decode(); err != nil {
		return row.TokenInfo, nil, fmt.Errorf("resolve phantom token %s: %w", tokenid.Show(tok), err)
	}
	if !row.Data.Valid {
		return row.TokenInfo, nil, nil
	}
	c, err := d.decodeData(CredentialKey{Set: row.CredentialSet, Provider: row.Provider}, []byte(row.Data.String))
	if err != nil {
		return row.TokenInfo, nil, err
	}
	return row.TokenInfo, c, nil
}

// TokenRow is a stored token with what it stands for, for listings.
type TokenRow struct {
	Token string `db:"token" json:"token"`
	TokenInfo
}

// ListTokens returns the tokens of project (all projects when empty), for
// operator listings. Callers must show tokens only by prefix.
func (d *DB) ListTokens(ctx context.Context, project string) ([]TokenRow, error) {
	out := []TokenRow{}
	q := `SELECT token, project, task, credential_set, provider FROM proxy_tokens`
	args := []any{}
	if project != "" {
		q += ` WHERE project = ?`
		args = append(args, project)
	}
	q += ` ORDER BY project, task, provider`
	if err := d.x.SelectContext(ctx, &out, q, args...); err != nil {
		return nil, fmt.Errorf("list phantom tokens: %w", err)
	}
	return out, nil
}

// RevokeTokens deletes every token of the task t and returns the count.
func (d *DB) RevokeTokens(ctx context.Context, t names.TaskRef) (int64, error) {
	project, task := t.Project, t.Task
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	// The expiry rows first (they name tokens of this task), in the
	// same transaction as the tokens.
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("revoke phantom tokens of %s/%s: %w", project, task, err)
	}
	defer func() { _ = tx.Rollback() }()
	for _, table := range []string{"token_expiry", "token_scope", "token_binding", "token_quota"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE token IN (SELECT token FROM proxy_tokens WHERE project = ? AND task = ?)`, project, task); err != nil {
			return 0, fmt.Errorf("revoke phantom tokens of %s/%s: %w", project, task, err)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM proxy_tokens WHERE project = ? AND task = ?`, project, task)
	if err != nil {
		return 0, fmt.Errorf("revoke phantom tokens of %s/%s: %w", project, task, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("revoke phantom tokens of %s/%s: %w", project, task, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("revoke phantom tokens of %s/%s: %w", project, task, err)
	}
	return n, nil
}

// UpdateCredential replaces key's data only if it still equals old
// (compare-and-swap on the stored text), so a background refresh never
// overwrites a credential an operator changed meanwhile. It reports whether
// the row was updated.
func (d *DB) UpdateCredential(ctx context.Context, key CredentialKey, old, next Credential) (bool, error) {
	set, provider := key.Set, key.Provider
	defer d.writes.Add(1) // after the commit: invalidates Resolver caches
	ob, err := json.Marshal(old)
	if err != nil {
		return false, err
	}
	w, err := d.vault.BeginWrite()
	if err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	defer w.Close() // after the commit: a key rotation waits for it
	nv, err := encodeData(w, key, next)
	if err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	defer func() { _ = tx.Rollback() }()
	var cur string
	err = tx.GetContext(ctx, &cur, `SELECT data FROM credentials WHERE credential_set = ? AND provider = ?`, set, provider)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	curC, err := d.decodeData(key, []byte(cur))
	if err != nil {
		if secretstore.IsSealed([]byte(cur)) {
			return false, fmt.Errorf("update %w", err)
		}
		return false, nil
	}
	cb, _ := json.Marshal(curC)
	if !bytes.Equal(cb, ob) {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE credentials SET data = ? WHERE credential_set = ? AND provider = ?`,
		nv, set, provider); err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("update credential %s/%s: %w", set, provider, err)
	}
	return true, nil
}
