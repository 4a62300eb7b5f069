// Package gitgate is the host-side git mirror the gate serves to task
// containers: one bare mirror per project under the gate base path
// (docs/gate.md). It syncs the mirror from the project's upstream (all
// branches, or only selected ones so unreviewed task branches survive),
// compares it with the upstream (Staleness) and reports its last commit.
//
// Upstream access uses only the project's own SSH key; the operator's
// personal keys and agent are never offered unless Options.AllowHostKeys is
// set.
package gitgate

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/names"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/runner/internal/mirror"
)

// SyncResult is what Sync and SyncBranches did: the mirror path, whether
// it was created, the updated branches and the per-branch errors. Its JSON
// form is the one `terok-sandbox gate sync --json` prints.
type SyncResult = mirror.SyncResult

// Staleness compares one branch of the mirror with the upstream: both
// heads, whether the mirror is behind, the commit counts each way, when it
// was checked and, when the comparison failed, why (Error). Pointer fields
// are nil when unknown (JSON null).
type Staleness = mirror.Staleness

// Commit is the mirror's last commit (hash, date, author, subject).
type Commit = mirror.Commit

// ErrNoUpstream is Sync's error when Options.UpstreamURL is empty.
var ErrNoUpstream = mirror.ErrNoUpstream

// ValidBranch reports whether b is a branch name Sync accepts (no option
// or refspec syntax); git's own check-ref-format runs as well.
func ValidBranch(b string) bool { return mirror.ValidBranch(b) }

// Options describe one project's mirror. Only Project is required.
type Options struct {
	// Project is the project id (the id rule of docs/runner.md, Names);
	// the mirror is <gate base path>/<Project>.git.
	Project string
	// UpstreamURL is the repository Sync clones and fetches from.
	UpstreamURL string
	// DefaultBranch is what CompareWithUpstream compares when given "".
	DefaultBranch string
	// SSHHostDir holds the project's SSH key; "" is
	// <state_dir>/ssh-keys/<Project>.
	SSHHostDir string
	// SSHKeyName is the key file name; "" is id_ed25519_<Project>.
	SSHKeyName string
	// AllowHostKeys lets host-side git use the operator's own SSH keys
	// and agent when the project has no key.
	AllowHostKeys bool
	// Validate, when set, runs before every sync (an orchestrator can
	// refuse two projects sharing one mirror with different upstreams).
	Validate func(project string) error
	// Environ is git's environment; nil is the process environment.
	Environ []string
	// Log receives warnings; nil discards.
	Log *slog.Logger
	// Progress, when set, receives git's own clone/fetch progress.
	Progress io.Writer
}

// Gate is one project's mirror. It holds no open resources.
type Gate struct {
	m    *mirror.Manager
	path string
}

// New returns the mirror of o.Project under cfg's gate base path. Sealed
// project keys (docs/secrets-at-rest.md) are opened from cfg's credentials
// directory.
func New(cfg config.Config, o Options) (*Gate, error) {
	if err := names.ValidateProjectID(o.Project); err != nil {
		return nil, fmt.Errorf("git gate: %w", err)
	}
	if o.SSHHostDir == "" {
		o.SSHHostDir = filepath.Join(cfg.SSHKeysDir(), o.Project)
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	path := filepath.Join(cfg.GateBasePath(), o.Project+".git")
	m := mirror.New(mirror.Options{
		ProjectID:     o.Project,
		GatePath:      path,
		UpstreamURL:   o.UpstreamURL,
		DefaultBranch: o.DefaultBranch,
		SSHHostDir:    o.SSHHostDir,
		SSHKeyName:    o.SSHKeyName,
		Validate:      o.Validate,
		AllowHostKeys: o.AllowHostKeys,
		Environ:       o.Environ,
		Log:           o.Log,
		Vault:         secretstore.OpenVault(cfg.CredentialsDir),
		Progress:      o.Progress,
	})
	return &Gate{m: m, path: path}, nil
}

// Path is the mirror's directory (<gate base path>/<project>.git), the
// repoPath a task's clone URL is built from (sandbox.GateURL).
func (g *Gate) Path() string { return g.path }

// SyncOptions say what Sync fetches and whether it starts over; the zero
// value fetches every branch into the existing mirror (created if missing).
type SyncOptions struct {
	// Branches are the branches to fetch; nil fetches all of them, with
	// pruning.
	Branches []string
	// ForceReinit deletes an existing mirror and clones it again.
	ForceReinit bool
}

// Sync creates the mirror if missing (or recreates it with
// o.ForceReinit) and fetches o.Branches. The error is for what stops the
// sync as a whole (ErrNoUpstream, a failed clone); failed branches are in
// SyncResult.Errors.
func (g *Gate) Sync(ctx context.Context, o SyncOptions) (SyncResult, error) {
	return g.m.Sync(ctx, o.Branches, o.ForceReinit)
}

// SyncBranches fetches exactly branches into an existing mirror (refspec
// +refs/heads/<b>:refs/heads/<b>), so task branches the upstream lacks
// survive; nil updates the whole mirror with pruning.
func (g *Gate) SyncBranches(ctx context.Context, branches []string) SyncResult {
	return g.m.SyncBranches(ctx, branches)
}

// CompareWithUpstream compares branch ("" = Options.DefaultBranch) of the
// mirror with the upstream. It never fails: problems are in
// Staleness.Error.
func (g *Gate) CompareWithUpstream(ctx context.Context, branch string) Staleness {
	return g.m.Compare(ctx, branch)
}

// LastCommit is the mirror's HEAD commit; nil when there is none (no
// mirror yet, or an empty repository).
func (g *Gate) LastCommit(ctx context.Context) *Commit { return g.m.LastCommit(ctx) }
