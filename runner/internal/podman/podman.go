// Package podman wraps the podman CLI for the runner's lifecycle helpers
// (docs/runner.md, Runtime helpers): every call takes a context, a missing podman becomes the
// one clear error ErrNotFound, and the helpers that must never fail a
// caller (state queries, stop) turn every failure into their neutral result.
package podman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/runner/internal/rundebug"
)

// ErrNotFound is returned when the podman binary cannot be found.
var ErrNotFound = errors.New("podman not found; please install podman")

// Exit status conventions of the helpers.
const (
	// ExitTimeout is wait's result when the timeout elapsed (like timeout(1)).
	ExitTimeout = 124
	// StopTimeout bounds each `podman rm -f` (docs/runner.md, Runtime helpers).
	StopTimeout = 120 * time.Second
)

// Podman runs one podman binary. The zero value runs "podman" from PATH
// without a debug log.
type Podman struct {
	// Bin is the podman executable (name or path); empty means "podman".
	Bin string
	// Debug receives the best-effort runner debug log lines; may be nil.
	Debug *rundebug.Log
}

func (p Podman) bin() string {
	if p.Bin == "" {
		return "podman"
	}
	return p.Bin
}

// Command builds a podman command. It does not resolve the binary early, so
// a missing podman shows up as ErrNotFound from Exec.
func (p Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.bin(), args...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Result of a finished podman invocation.
type Result struct {
	Stdout, Stderr []byte
	// Code is podman's exit status (-1 when it was killed or did not start).
	Code int
}

// Exec runs podman to completion and captures its output. The error is
// ErrNotFound for a missing binary, ctx.Err() when the context ended the
// run, an *exec.ExitError for a non-zero exit, or another start failure.
func (p Podman) Exec(ctx context.Context, args ...string) (Result, error) {
	return p.ExecShowing(ctx, nil, args...)
}

// ExecShowing is Exec that also copies podman's stderr (where it reports
// an image pull's progress) to show, when show is not nil.
func (p Podman) ExecShowing(ctx context.Context, show io.Writer, args ...string) (Result, error) {
	var out, errb bytes.Buffer
	cmd := p.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if show != nil {
		cmd.Stderr = io.MultiWriter(&errb, show)
	}
	err := cmd.Run()
	res := Result{Stdout: out.Bytes(), Stderr: errb.Bytes(), Code: -1}
	if cmd.ProcessState != nil {
		res.Code = cmd.ProcessState.ExitCode()
	}
	if err == nil {
		return res, nil
	}
	if IsNotFound(err) {
		return res, ErrNotFound
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, err
}

// IsNotFound reports whether err means the executable does not exist.
func IsNotFound(err error) bool {
	if errors.Is(err, ErrNotFound) || errors.Is(err, exec.ErrNotFound) {
		return true
	}
	var pe *exec.Error
	if errors.As(err, &pe) {
		return true
	}
	// exec of a path that does not exist.
	var pathErr *fs.PathError
	return errors.As(err, &pathErr) && errors.Is(pathErr.Err, fs.ErrNotExist)
}

// State is the container's lowercased .State.Status from `podman container
// inspect` (JSON); ok is false when podman fails, is missing, knows no such
// container or reports no status (docs/runner.md, Runtime helpers).
func (p Podman) State(ctx context.Context, name string) (state string, ok bool) {
	c, err := p.Inspect(ctx, name)
	if err != nil {
		return "", false
	}
	return c.Status, c.Status != ""
}

// IsRunning is the container's .State.Running; any failure is false.
func (p Podman) IsRunning(ctx context.Context, name string) bool {
	c, err := p.Inspect(ctx, name)
	return err == nil && c.Running
}

// NameFilter is the podman name filter matching "<prefix>-…" with the
// prefix's regular expression metacharacters escaped.
func NameFilter(prefix string) string {
	return "name=^" + regexp.QuoteMeta(prefix) + "-"
}

// PsEntry is one element of `podman ps --format json`: the fields the
// runner reads, and the element verbatim for `ps --json`.
type PsEntry struct {
	// ID is the full container id.
	ID     string            `json:"Id"`
	Names  []string          `json:"Names"`
	State  string            `json:"State"`
	Labels map[string]string `json:"Labels"`
	// Raw is the element as podman printed it.
	Raw json.RawMessage `json:"-"`
}

// Name is the container's first name ("" when podman listed none).
func (e PsEntry) Name() string {
	if len(e.Names) == 0 {
		return ""
	}
	return e.Names[0]
}

// ParsePs reads the JSON array `podman ps --format json` prints. Entries
// without a name are dropped; State becomes the state word.
func ParsePs(out []byte) ([]PsEntry, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(out, &raws); err != nil {
		return nil, fmt.Errorf("unreadable podman ps output: %w", err)
	}
	entries := make([]PsEntry, 0, len(raws))
	for _, r := range raws {
		var e PsEntry
		if err := json.Unmarshal(r, &e); err != nil {
			return nil, fmt.Errorf("unreadable podman ps entry: %w", err)
		}
		if e.Name() == "" {
			continue
		}
		e.State, e.Raw = NormalizeState(e.State), r
		entries = append(entries, e)
	}
	return entries, nil
}

// List is `podman ps -a --format json` with the given --filter values
// (podman ANDs filters of different keys).
func (p Podman) List(ctx context.Context, filters ...string) ([]PsEntry, error) {
	args := []string{"ps", "-a", "--format", "json"}
	for _, f := range filters {
		args = append(args, "--filter", f)
	}
	res, err := p.Exec(ctx, args...)
	if err != nil {
		if errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("podman ps: %s", ErrorText(res, err, "podman ps"))
	}
	return ParsePs(res.Stdout)
}

// ProjectStates maps the names of containers named "<prefix>-…" to their
// state word; empty on any failure. Names not starting with "<prefix>-"
// are dropped as a second guard behind podman's filter.
func (p Podman) ProjectStates(ctx context.Context, prefix string) map[string]string {
	states := map[string]string{}
	entries, err := p.List(ctx, NameFilter(prefix))
	if err != nil {
		return states
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") && e.State != "" {
			states[e.Name()] = e.State
		}
	}
	return states
}

// NormalizeState turns a ps state into a state word. Podman's JSON carries
// the word ("running"); older releases' human status ("Up 3 seconds ago",
// "Exited (7) 2 minutes ago") becomes the word inspect's .State.Status uses
// too: "up …" → "running", otherwise the lowercased first word.
func NormalizeState(s string) string {
	fields := strings.Fields(strings.ToLower(s))
	if len(fields) == 0 {
		return ""
	}
	if fields[0] == "up" {
		return "running"
	}
	return fields[0]
}

// Wait runs `podman wait` and returns the container's exit code
// (docs/runner.md, Runtime helpers): stdout's integer; podman's own status when stdout is
// empty; ExitTimeout when timeout (> 0) elapsed; 1 when podman is missing or
// stdout is not an integer.
func (p Podman) Wait(ctx context.Context, name string, timeout time.Duration) int {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := p.Exec(wctx, "wait", name)
	return waitOutcome(res, err, wctx.Err() != nil && ctx.Err() == nil)
}

func waitOutcome(res Result, err error, timedOut bool) int {
	if timedOut {
		return ExitTimeout
	}
	if errors.Is(err, ErrNotFound) {
		return 1
	}
	out := strings.TrimSpace(string(res.Stdout))
	if out == "" {
		if res.Code < 0 {
			return 1
		}
		return res.Code
	}
	// podman prints one line per container; we wait for one.
	if i := strings.IndexByte(out, '\n'); i >= 0 {
		out = strings.TrimSpace(out[:i])
	}
	n, convErr := strconv.Atoi(out)
	if convErr != nil {
		return 1
	}
	return n
}

// Stop force-removes each container with `podman rm -f` (StopTimeout each),
// ignoring every error and output: a missing podman or an already removed
// container must not fail task deletion (docs/runner.md, Runtime helpers).
func (p Podman) Stop(ctx context.Context, names []string) {
	for _, name := range names {
		p.Debug.Debug("stop: removing container %s", name)
		rctx, cancel := context.WithTimeout(ctx, StopTimeout)
		res, err := p.Exec(rctx, "rm", "-f", name)
		cancel()
		if err != nil {
			p.Debug.Debug("stop: podman rm -f %s ended: %v (%s)", name, err, strings.TrimSpace(string(res.Stderr)))
			continue
		}
		p.Debug.Debug("stop: container %s removed", name)
	}
}

// ErrorText is the trimmed stderr of a failed run, or a generic description
// of the command when stderr is empty.
func ErrorText(res Result, err error, what string) string {
	if s := strings.TrimSpace(string(res.Stderr)); s != "" {
		return s
	}
	if res.Code > 0 {
		return fmt.Sprintf("%s exited with status %d", what, res.Code)
	}
	return fmt.Sprintf("%s failed: %v", what, err)
}
