// Package mirror maintains one host-side bare mirror per project: the
// repositories the gate serves (docs/gate.md, Mirror manager). Upstream access uses
// only the project's own SSH key; the operator's personal keys and agent are
// never offered unless explicitly allowed (docs/gate.md, Mirror manager).
package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"terok.dev/sandbox/common/secretstore"
)

// Timeouts of host-side git commands.
const (
	UpdateTimeout   = 120 * time.Second
	LsRemoteTimeout = 30 * time.Second
	CloneTimeout    = 30 * time.Minute
	localTimeout    = 60 * time.Second
)

// Options are the constructor's plain values (docs/gate.md, Mirror manager).
type Options struct {
	ProjectID     string
	GatePath      string // <gate base path>/<project>.git
	UpstreamURL   string
	DefaultBranch string
	SSHHostDir    string // default <ssh keys dir>/<project> (caller fills it)
	SSHKeyName    string // default id_ed25519_<project>
	// Validate runs before sync operations (lets an orchestrator refuse two
	// projects sharing a mirror with different upstreams).
	Validate      func(projectID string) error
	AllowHostKeys bool
	// Environ is the caller's environment; nil means os.Environ().
	Environ []string
	Log     *slog.Logger
	// Git is the git program; "" means "git".
	Git string
	// Vault opens a sealed project key (docs/secrets-at-rest.md); nil
	// means plaintext keys only.
	Vault *secretstore.Vault
	// Progress, when not nil, receives git's own progress output of the
	// clone and fetch (--progress; the caller passes its terminal).
	Progress io.Writer
}

// Manager is the mirror of one project.
type Manager struct {
	o        Options
	warnOnce sync.Once
}

// New returns a manager.
func New(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Git == "" {
		o.Git = "git"
	}
	if o.SSHKeyName == "" {
		o.SSHKeyName = "id_ed25519_" + o.ProjectID
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	return &Manager{o: o}
}

// SyncResult is sync's and sync_branches' result.
type SyncResult struct {
	Path            string   `json:"path,omitempty"`
	UpstreamURL     string   `json:"upstream_url,omitempty"`
	Created         bool     `json:"created"`
	Success         bool     `json:"success"`
	UpdatedBranches []string `json:"updated_branches"`
	Errors          []string `json:"errors"`
}

// Staleness is compare_vs_upstream's record (docs/gate.md, Mirror manager).
type Staleness struct {
	Branch        *string `json:"branch"`
	GateHead      *string `json:"gate_head"`
	UpstreamHead  *string `json:"upstream_head"`
	IsStale       bool    `json:"is_stale"`
	CommitsBehind *int    `json:"commits_behind"`
	CommitsAhead  *int    `json:"commits_ahead"`
	LastChecked   string  `json:"last_checked"`
	Error         *string `json:"error"`
}

// Commit is last_commit's result (docs/gate.md, Mirror manager).
type Commit struct {
	Hash    string `json:"commit_hash"`
	Date    string `json:"commit_date"`
	Author  string `json:"commit_author"`
	Message string `json:"commit_message"`
}

// KeyPath is the project key file the SSH environment uses.
func (m *Manager) KeyPath() string { return filepath.Join(m.o.SSHHostDir, m.o.SSHKeyName) }

// SSHEnv (docs/gate.md, Mirror manager) is the caller's environment plus the variables that pin
// upstream SSH access to the project key (or to no key at all).
func (m *Manager) SSHEnv() []string {
	env := append([]string(nil), m.o.Environ...)
	key := m.KeyPath()
	if fi, err := os.Stat(key); err == nil && fi.Mode().IsRegular() {
		return append(env,
			"GIT_SSH_COMMAND=ssh -o IdentitiesOnly=yes -o IdentityFile="+shellQuote(key)+" -o StrictHostKeyChecking=no",
			"SSH_AUTH_SOCK=")
	}
	if m.o.AllowHostKeys {
		return env
	}
	m.warnOnce.Do(func() { m.warnNoKey(key) })
	return append(env, "GIT_SSH_COMMAND=ssh -o IdentitiesOnly=yes -o StrictHostKeyChecking=no", "SSH_AUTH_SOCK=")
}

func (m *Manager) warnNoKey(key string) {
	m.o.Log.Warn("project SSH key not found; upstream SSH access will offer no key (personal keys and agent are not used)",
		"project", m.o.ProjectID, "key", key,
		"next", "create one with 'terok-sandbox ssh add-key "+m.o.ProjectID+"' or import it with 'terok-sandbox ssh import'")
}

// shellQuote quotes s for GIT_SSH_COMMAND, which git runs through the shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

type runResult struct {
	stdout, stderr string
	timedOut       bool
	notFound       bool
}

func (m *Manager) git(ctx context.Context, timeout time.Duration, env []string, args ...string) (runResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.o.Git, args...)
	if env == nil {
		env = m.o.Environ
	}
	cmd.Env = append(append([]string(nil), env...), "GIT_TERMINAL_PROMPT=0")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if m.o.Progress != nil && progressCommand(args) {
		cmd.Stderr = io.MultiWriter(&errb, m.o.Progress)
	}
	err := cmd.Run()
	res := runResult{stdout: out.String(), stderr: strings.TrimSpace(withoutProgress(errb.String()))}
	if ctx.Err() == context.DeadlineExceeded {
		res.timedOut = true
	}
	if errors.Is(err, exec.ErrNotFound) {
		res.notFound = true
	}
	return res, err
}

// progressCommand reports whether args run a git clone or fetch that was
// given --progress.
func progressCommand(args []string) bool {
	for _, a := range args {
		if a == "--progress" {
			return true
		}
	}
	return false
}

// withoutProgress drops git's progress meter from captured stderr, so an
// error message holds only the lines that say what went wrong: the part of
// a line after its last carriage return, and no "Receiving objects: 45%"
// style meter lines.
func withoutProgress(s string) string {
	if !strings.ContainsRune(s, '\r') {
		return s
	}
	var kept []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		if isProgressLine(line) {
			continue
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, "\n")
}

// isProgressLine matches git's meter: "[remote: ]Words: NN% (...)".
func isProgressLine(line string) bool {
	line = strings.TrimPrefix(line, "remote: ")
	label, rest, ok := strings.Cut(line, ": ")
	if !ok || label == "" || strings.ContainsFunc(label, func(r rune) bool { return !(r == ' ' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') }) {
		return false
	}
	pct, _, ok := strings.Cut(strings.TrimSpace(rest), "%")
	if !ok || pct == "" {
		return false
	}
	_, err := strconv.Atoi(pct)
	return err == nil
}

// progressArg is git's --progress when the caller wants progress.
func (m *Manager) progressArg() []string {
	if m.o.Progress == nil {
		return nil
	}
	return []string{"--progress"}
}

func (m *Manager) exists() bool {
	fi, err := os.Stat(m.o.GatePath)
	return err == nil && fi.IsDir()
}

// ErrNoUpstream is sync's error without an upstream URL (spec wording).
var ErrNoUpstream error = specError("Project has no git.upstream_url configured")

type specError string

func (e specError) Error() string { return string(e) }

// Sync is `gate sync` (docs/gate.md, Mirror manager).
func (m *Manager) Sync(ctx context.Context, branches []string, forceReinit bool) (SyncResult, error) {
	res := SyncResult{Path: m.o.GatePath, UpstreamURL: m.o.UpstreamURL, UpdatedBranches: []string{}, Errors: []string{}}
	if m.o.UpstreamURL == "" {
		return res, ErrNoUpstream
	}
	if m.o.Validate != nil {
		if err := m.o.Validate(m.o.ProjectID); err != nil {
			return res, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(m.o.GatePath), 0o700); err != nil {
		return res, fmt.Errorf("create %s: %w", filepath.Dir(m.o.GatePath), err)
	}
	if forceReinit && m.exists() {
		if err := os.RemoveAll(m.o.GatePath); err != nil {
			m.o.Log.Warn("Failed to remove gate dir "+m.o.GatePath, "error", err.Error())
		}
	}
	if !m.exists() {
		env, stop, err := m.sshEnv()
		if err != nil {
			return res, err
		}
		args := append(append([]string{"clone", "--mirror"}, m.progressArg()...), "--", m.o.UpstreamURL, m.o.GatePath)
		r, err := m.git(ctx, CloneTimeout, env, args...)
		stop()
		switch {
		case r.notFound:
			return res, errors.New("git not found on host; please install git")
		case r.timedOut:
			return res, errors.New("git clone --mirror failed: timed out")
		case err != nil:
			return res, fmt.Errorf("git clone --mirror failed: %s", firstNonEmpty(r.stderr, err.Error()))
		}
		res.Created = true
	}
	br := m.SyncBranches(ctx, branches)
	res.Success, res.UpdatedBranches, res.Errors = br.Success, br.UpdatedBranches, br.Errors
	return res, nil
}

// ValidBranch rejects names that git would take as options or refspec
// syntax; git's own check-ref-format runs as well.
func ValidBranch(b string) bool {
	return b != "" && !strings.HasPrefix(b, "-") && !strings.ContainsAny(b, ":+*?[\\ \t\n\x00^~") && !strings.Contains(b, "..")
}

// SyncBranches fetches branches into the mirror (docs/gate.md, Mirror
// manager). With branches, exactly those are fetched (refspec
// +refs/heads/<b>:refs/heads/<b>), so task branches not upstream survive;
// without, the whole mirror is updated with pruning.
func (m *Manager) SyncBranches(ctx context.Context, branches []string) SyncResult {
	res := SyncResult{UpdatedBranches: []string{}, Errors: []string{}}
	if !m.exists() {
		res.Errors = append(res.Errors, "Gate not initialized")
		return res
	}
	if m.o.Validate != nil {
		if err := m.o.Validate(m.o.ProjectID); err != nil {
			res.Errors = append(res.Errors, err.Error())
			return res
		}
	}
	env, stop, err := m.sshEnv()
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return res
	}
	defer stop()
	collect := func(what string, r runResult, err error) {
		switch {
		case err == nil:
		case r.timedOut:
			res.Errors = append(res.Errors, "Sync timed out")
		case r.notFound:
			res.Errors = append(res.Errors, "git not found on host; please install git")
		default:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				res.Errors = append(res.Errors, what+" failed: "+r.stderr)
			} else {
				res.Errors = append(res.Errors, err.Error())
			}
		}
	}
	if len(branches) == 0 {
		args, what := []string{"-C", m.o.GatePath, "remote", "update", "--prune"}, "remote update"
		if m.o.Progress != nil {
			// remote update has no --progress; for the mirror's one remote
			// (refspec +refs/*:refs/*) a fetch of origin is the same update.
			args, what = []string{"-C", m.o.GatePath, "fetch", "--prune", "--progress", "origin"}, "fetch"
		}
		r, err := m.git(ctx, UpdateTimeout, env, args...)
		collect(what, r, err)
		if len(res.Errors) == 0 {
			res.UpdatedBranches = []string{"all"}
		}
	} else {
		refspecs := make([]string, 0, len(branches))
		for _, b := range branches {
			if !ValidBranch(b) {
				res.Errors = append(res.Errors, fmt.Sprintf("invalid branch name %q", b))
				continue
			}
			refspecs = append(refspecs, "+refs/heads/"+b+":refs/heads/"+b)
		}
		if len(res.Errors) == 0 {
			args := append(append(append([]string{"-C", m.o.GatePath, "fetch", "--prune"}, m.progressArg()...), "origin"), refspecs...)
			r, err := m.git(ctx, UpdateTimeout, env, args...)
			collect("fetch", r, err)
			if len(res.Errors) == 0 {
				res.UpdatedBranches = append(res.UpdatedBranches, branches...)
			}
		}
	}
	res.Success = len(res.Errors) == 0
	return res
}

func strp(s string) *string { return &s }
func intp(i int) *int       { return &i }

// Compare is `gate compare` (docs/gate.md, Mirror manager; branch "" = the default branch).
func (m *Manager) Compare(ctx context.Context, branch string) Staleness {
	st := Staleness{LastChecked: time.Now().Format(time.RFC3339)}
	if branch == "" {
		branch = m.o.DefaultBranch
	}
	if branch == "" {
		st.Error = strp("No branch configured")
		return st
	}
	st.Branch = strp(branch)
	if !ValidBranch(branch) {
		st.Error = strp(fmt.Sprintf("invalid branch name %q", branch))
		return st
	}
	if m.exists() {
		r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "rev-parse", "--verify", "-q", "refs/heads/"+branch)
		if err == nil && strings.TrimSpace(r.stdout) != "" {
			st.GateHead = strp(strings.TrimSpace(r.stdout))
		}
	}
	if st.GateHead == nil {
		st.Error = strp("Gate not initialized")
		return st
	}
	if m.o.UpstreamURL == "" {
		st.Error = strp("No upstream URL configured")
		return st
	}
	env, stop, err := m.sshEnv()
	if err != nil {
		st.Error = strp(err.Error())
		return st
	}
	r, err := m.git(ctx, LsRemoteTimeout, env, "ls-remote", "--", m.o.UpstreamURL, "refs/heads/"+branch)
	stop()
	line, _, _ := strings.Cut(r.stdout, "\n")
	head, _, _ := strings.Cut(line, "\t")
	head = strings.TrimSpace(head)
	if err != nil || head == "" {
		st.Error = strp("Could not reach upstream")
		return st
	}
	st.UpstreamHead = strp(head)
	st.IsStale = *st.GateHead != head
	if !st.IsStale {
		st.CommitsBehind, st.CommitsAhead = intp(0), intp(0)
		return st
	}
	count := func(rng string) *int {
		r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "rev-list", "--count", rng)
		if err != nil {
			return nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(r.stdout))
		if err != nil {
			return nil
		}
		return &n
	}
	st.CommitsBehind = count(*st.GateHead + ".." + head)
	st.CommitsAhead = count(head + ".." + *st.GateHead)
	return st
}

// LastCommit is `gate last-commit` (docs/gate.md, Mirror manager); nil when there is nothing to report.
func (m *Manager) LastCommit(ctx context.Context) *Commit {
	if !m.exists() {
		return nil
	}
	rev := "HEAD"
	if m.o.DefaultBranch != "" && ValidBranch(m.o.DefaultBranch) {
		rev = "refs/heads/" + m.o.DefaultBranch
	}
	run := func(rev string) (string, error) {
		r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "log", "-1", rev,
			"--pretty=format:%H%x00%ad%x00%an%x00%s", "--date=iso", "--")
		return r.stdout, err
	}
	out, err := run(rev)
	if err != nil && rev != "HEAD" {
		out, err = run("HEAD")
	}
	if err != nil {
		return nil
	}
	f := strings.Split(out, "\x00")
	if len(f) != 4 {
		return nil
	}
	return &Commit{Hash: f[0], Date: f[1], Author: f[2], Message: f[3]}
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}
