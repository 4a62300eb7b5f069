package testharness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/podman"
)

// Runner runs commands as root or as the rootless test user, with the test
// containers.conf, isolated TEROK_* directories and a unique container name
// prefix. Get one per test from Env.Root, Env.Rootless or Env.Each; its
// containers and directories are removed when the test ends.
type Runner struct {
	env *Env
	// Kind is "root" or "rootless".
	Kind string
	// User is nil for root.
	User *User
	// Prefix starts the name of every container this runner creates (see
	// Name); Cleanup removes them all.
	Prefix string
	// Base is the runner's private directory (owned by the runner's user,
	// 0755); Dirs live below it.
	Base string
	Dirs Dirs
	// ExtraEnv is appended to the environment of every command (tests may
	// add to it before running commands).
	ExtraEnv []string
}

// Dirs are the isolated roots handed to the binaries through the
// environment (docs/config.md, Environment variables).
type Dirs struct {
	State, Runtime, Config, Credentials, Umbrella, XDGState string
}

// Result is the outcome of a finished command.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status; -1 when the command could not start or was
	// killed by a signal.
	Code int
	Err  error
}

// String renders the result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d (err %v)\nstdout:\n%s\nstderr:\n%s", r.Code, r.Err, r.Stdout, r.Stderr)
}

// Root returns a root runner for t.
func (e *Env) Root(t testing.TB) *Runner { return e.newRunner(t, nil) }

// Rootless returns a runner that runs as the rootless test user.
func (e *Env) Rootless(t testing.TB) *Runner { return e.newRunner(t, &e.User) }

// Each runs fn as the subtests "root" and "rootless", each with its own
// runner.
func (e *Env) Each(t *testing.T, fn func(t *testing.T, r *Runner)) {
	t.Run("root", func(t *testing.T) { fn(t, e.Root(t)) })
	t.Run("rootless", func(t *testing.T) { fn(t, e.Rootless(t)) })
}

func (e *Env) newRunner(t testing.TB, u *User) *Runner {
	t.Helper()
	r, err := e.NewRunner(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// NewRunner is a runner as root (u nil) or as u outside a test, e.g. for a
// TestMain that prepares a host for examples; the caller calls Close when
// done. Tests use Root, Rootless or Each, which close it for them.
func (e *Env) NewRunner(u *User) (*Runner, error) {
	r := &Runner{env: e, Kind: "root", User: u, Prefix: "tke2e-" + randHex(4)}
	if u != nil {
		r.Kind = "rootless"
	}
	base, err := os.MkdirTemp("", "terok-e2e-"+r.Kind+"-")
	if err != nil {
		return nil, fmt.Errorf("runner base dir: %w", err)
	}
	r.Base = base
	r.Dirs = Dirs{
		State:       filepath.Join(base, "state"),
		Runtime:     filepath.Join(base, "run"),
		Config:      filepath.Join(base, "config"),
		Credentials: filepath.Join(base, "credentials"),
		Umbrella:    filepath.Join(base, "terok-config"),
		XDGState:    filepath.Join(base, "xdg-state"),
	}
	if err := os.Chmod(base, 0o755); err != nil {
		r.Close()
		return nil, fmt.Errorf("runner base dir: %w", err)
	}
	if err := r.Chown(base); err != nil {
		r.Close()
		return nil, fmt.Errorf("runner base dir: %w", err)
	}
	if err := r.installSeccomp(); err != nil {
		r.Close()
		return nil, fmt.Errorf("runner seccomp profile: %w", err)
	}
	return r, nil
}

// Close removes the runner's containers (Cleanup) and its directories.
func (r *Runner) Close() {
	r.Cleanup()
	_ = os.RemoveAll(r.Base)
}

// Env is the harness this runner belongs to.
func (r *Runner) Env() *Env { return r.env }

// Name returns a container name under the runner's prefix.
func (r *Runner) Name(suffix string) string { return r.Prefix + "-" + suffix }

// UID is the host uid commands run as.
func (r *Runner) UID() int {
	if r.User == nil {
		return 0
	}
	return r.User.UID
}

// Chown gives path to the runner's user (no-op for root).
func (r *Runner) Chown(path string) error {
	if r.User == nil {
		return nil
	}
	return os.Chown(path, r.User.UID, r.User.GID)
}

// Mkdir creates dir (and parents below Base) owned by the runner's user.
func (r *Runner) Mkdir(dir string, perm os.FileMode) error {
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	if err := os.Chmod(dir, perm); err != nil {
		return err
	}
	return r.Chown(dir)
}

// WriteFile writes a file owned by the runner's user.
func (r *Runner) WriteFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		return err
	}
	return r.Chown(path)
}

// WriteConfig writes the sandbox config file (TOML, docs/config.md, The config file)
// into the runner's config dir.
func (r *Runner) WriteConfig(toml string) error {
	if err := r.Mkdir(r.Dirs.Config, 0o755); err != nil {
		return err
	}
	return r.WriteFile(filepath.Join(r.Dirs.Config, "config.toml"), []byte(toml), 0o644)
}

// Environ is the environment of every command the runner starts.
func (r *Runner) Environ() []string {
	var env []string
	if r.User != nil {
		env = r.User.baseEnv(r.env.ContainersConf)
	} else {
		for _, kv := range os.Environ() {
			if strings.HasPrefix(kv, "TEROK_") || strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "CONTAINERS_CONF=") {
				continue
			}
			env = append(env, kv)
		}
		env = append(env, "CONTAINERS_CONF="+r.env.ContainersConf)
	}
	env = append(env,
		"TEROK_SANDBOX_STATE_DIR="+r.Dirs.State,
		"TEROK_SANDBOX_RUNTIME_DIR="+r.Dirs.Runtime,
		"TEROK_SANDBOX_CONFIG_DIR="+r.Dirs.Config,
		"TEROK_CREDENTIALS_DIR="+r.Dirs.Credentials,
		"TEROK_CONFIG_DIR="+r.Dirs.Umbrella,
		"XDG_STATE_HOME="+r.Dirs.XDGState,
		"TEROK_BIN_DIR="+r.env.BinDir,
	)
	return append(env, r.ExtraEnv...)
}

// Command builds a command run as the runner's user with its environment.
// A bare name is looked up in the binary dir first (project binaries), then
// PATH.
func (r *Runner) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if !strings.Contains(name, "/") {
		if p := filepath.Join(r.env.BinDir, name); fileExists(p) {
			name = p
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	if r.User != nil {
		r.User.apply(cmd, r.env.ContainersConf)
	} else {
		cmd.Dir = r.Base
	}
	cmd.Env = r.Environ()
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs a command to completion and collects its output.
func (r *Runner) Run(ctx context.Context, name string, args ...string) Result {
	return Collect(r.Command(ctx, name, args...))
}

// Sandbox runs bin/terok-sandbox with args.
func (r *Runner) Sandbox(ctx context.Context, args ...string) Result {
	bin, err := r.env.Bin("terok-sandbox")
	if err != nil {
		return Result{Code: -1, Err: err}
	}
	return r.Run(ctx, bin, args...)
}

// Podman runs podman as the runner's user with the test containers.conf.
func (r *Runner) Podman(ctx context.Context, args ...string) Result {
	return r.Run(ctx, "podman", args...)
}

// Collect runs cmd and returns its output and exit status.
func Collect(cmd *exec.Cmd) Result {
	var out, errb bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &errb
	}
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String(), Err: err}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.Code = 0
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		res.Code = -1
	}
	return res
}

// Cleanup removes every container whose name starts with the runner's
// prefix. Called automatically when the test ends.
func (r *Runner) Cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	CleanupPrefix(ctx, r, r.Prefix)
}

// CleanupPrefix force-removes the containers named <prefix>-… in the
// runner's podman storage.
func CleanupPrefix(ctx context.Context, r *Runner, prefix string) {
	res := r.Podman(ctx, "ps", "-a", "--format", "json", "--filter", podman.NameFilter(prefix))
	entries, err := podman.ParsePs([]byte(res.Stdout))
	if err != nil {
		return
	}
	for _, e := range entries {
		if name := e.Name(); strings.HasPrefix(name, prefix+"-") {
			r.Podman(ctx, "rm", "-f", "-t", "0", name)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
