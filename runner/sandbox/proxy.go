package sandbox

import (
	"context"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/runner/daemons"
)

// ProxyStatus is what `proxy status` reports (docs/credential-proxy.md, Operating it): Mode is "systemd", "daemon" or
// "none".
type ProxyStatus = daemons.ProxyStatus

// proxy is the public proxy lifecycle (runner/daemons) of this facade.
func (s *Sandbox) proxy() *daemons.Proxy {
	return daemons.NewProxy(s.cfg, daemons.Options{Env: s.env, Log: s.log})
}

// EnsureProxy checks that the credential proxy and its SSH agent port are
// reachable before a task that uses them is created
// (docs/credential-proxy.md, Operating it). In systemd mode it starts the service; it never starts a daemon.
func (s *Sandbox) EnsureProxy(ctx context.Context) error { return s.proxy().Ensure(ctx) }

// ProxyStatus reports how the credential proxy runs.
func (s *Sandbox) ProxyStatus(ctx context.Context) ProxyStatus { return s.proxy().Status(ctx) }

// StartProxy starts the detached proxy daemon (docs/credential-proxy.md, Operating it).
func (s *Sandbox) StartProxy(ctx context.Context) error {
	return s.proxy().Start(ctx, daemons.ProxyStart{})
}

// StopProxy stops the proxy daemon, if ours runs (docs/credential-proxy.md, Operating it).
func (s *Sandbox) StopProxy() bool { return s.proxy().Stop() }

// PhantomTokenSpec says what a phantom token stands for. Named fields
// because provider and set are both plain strings: positional, they were
// once passed swapped from this facade to the database.
type PhantomTokenSpec struct {
	Project, Task string
	// Provider is the route name of the credential ("claude", "gh", ...);
	// "ssh" is the SSH agent handshake.
	Provider string
	// Set is the credential set; "" is the default set.
	Set string
	// Allow and Deny, when any is set, narrow the route's scope for this
	// token: a request must pass both, deny wins (docs/credential-proxy.md,
	// Scopes). scope.ParseRule reads the command-line form.
	Allow, Deny []scope.Rule
	// Container, when set, binds the token to that container: it stops
	// working once the container's end is recorded (docs/security-model.md,
	// Tokens that die with their task).
	Container string
	// Quota, when set, limits the requests and/or response body bytes the
	// proxy forwards for this token; over it the proxy answers 429
	// (docs/credential-proxy.md, Token quotas). quota.ParseCount and
	// quota.ParseSize read the command-line forms.
	Quota quota.Limits
	// Expires, when not zero, is when the token stops working (refused
	// like a revoked one; `proxy token create --ttl`).
	Expires time.Time
}

// CreatePhantomToken issues the phantom token a task's container uses
// instead of the real credential of spec.Provider in spec.Set.
func (s *Sandbox) CreatePhantomToken(ctx context.Context, spec PhantomTokenSpec) (string, error) {
	if err := checkProjectTask("create phantom token", spec.Project, spec.Task); err != nil {
		return "", err
	}
	if spec.Set == "" {
		spec.Set = creddb.DefaultSet
	}
	db, err := creddb.Open(s.cfg.CredentialsDB())
	if err != nil {
		return "", err
	}
	defer db.Close()
	if spec.Container != "" {
		if err := taskend.MarkStarts(s.cfg.TaskEndsDir()); err != nil {
			return "", err
		}
	}
	return db.CreateToken(ctx, creddb.TokenSpec{Project: spec.Project, Task: spec.Task, Set: spec.Set, Provider: spec.Provider,
		Allow: spec.Allow, Deny: spec.Deny, Container: spec.Container, Quota: spec.Quota, Expires: spec.Expires})
}

// RevokePhantomTokens deletes every phantom token of project/task and
// returns how many there were; the proxy refuses them from the next request.
func (s *Sandbox) RevokePhantomTokens(ctx context.Context, t TaskRef) (int64, error) {
	db, err := creddb.Open(s.cfg.CredentialsDB())
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return db.RevokeTokens(ctx, t)
}

// EnsureProxy is Sandbox.EnsureProxy for cfg.
func EnsureProxy(ctx context.Context, cfg config.Config) error {
	return New(cfg, Options{}).EnsureProxy(ctx)
}

// GetProxyStatus is Sandbox.ProxyStatus for cfg.
func GetProxyStatus(ctx context.Context, cfg config.Config) ProxyStatus {
	return New(cfg, Options{}).ProxyStatus(ctx)
}

// CreatePhantomToken is Sandbox.CreatePhantomToken for cfg.
func CreatePhantomToken(ctx context.Context, cfg config.Config, spec PhantomTokenSpec) (string, error) {
	return New(cfg, Options{}).CreatePhantomToken(ctx, spec)
}

// RevokePhantomTokens is Sandbox.RevokePhantomTokens for cfg.
func RevokePhantomTokens(ctx context.Context, cfg config.Config, t TaskRef) (int64, error) {
	return New(cfg, Options{}).RevokePhantomTokens(ctx, t)
}
