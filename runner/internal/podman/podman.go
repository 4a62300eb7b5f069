// Package podman wraps the podman CLI for the runner's lifecycle helpers
// (runner.md §7): every call takes a context, a missing podman becomes the
// one clear error ErrNotFound, and the helpers that must never fail a
// caller (state queries, stop) turn every failure into their neutral result.
package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
	// StopTimeout bounds each `podman rm -f` (runner.md §7.4).
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
	var out, errb bytes.Buffer
	cmd := p.Command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
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

// State is `podman inspect -f {{.State.Status}}` lowercased; ok is false
// when podman fails, is missing or prints nothing (runner.md §7.3).
func (p Podman) State(ctx context.Context, name string) (state string, ok bool) {
	res, err := p.Exec(ctx, "inspect", "-f", "{{.State.Status}}", name)
	if err != nil {
		return "", false
	}
	s := strings.ToLower(strings.TrimSpace(string(res.Stdout)))
	return s, s != ""
}

// IsRunning is `podman inspect -f {{.State.Running}}` == "true"
// (case-insensitive); any failure is false.
func (p Podman) IsRunning(ctx context.Context, name string) bool {
	res, err := p.Exec(ctx, "inspect", "-f", "{{.State.Running}}", name)
	return err == nil && strings.EqualFold(strings.TrimSpace(string(res.Stdout)), "true")
}

// NameFilter is the podman name filter matching "<prefix>-…" with the
// prefix's regular expression metacharacters escaped.
func NameFilter(prefix string) string {
	return "name=^" + regexp.QuoteMeta(prefix) + "-"
}

// ProjectStates maps the names of containers named "<prefix>-…" to their
// lowercased state; empty on any failure.
func (p Podman) ProjectStates(ctx context.Context, prefix string) map[string]string {
	states := map[string]string{}
	res, err := p.Exec(ctx, "ps", "-a", "--filter", NameFilter(prefix), "--format", "{{.Names}} {{.State}}", "--no-trunc")
	if err != nil {
		return states
	}
	return ParseStates(res.Stdout, prefix)
}

// ParseStates reads `<name> <state>` lines (split at the first whitespace;
// other lines ignored). Names not starting with "<prefix>-" are dropped as
// a second guard behind podman's filter.
func ParseStates(out []byte, prefix string) map[string]string {
	states := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		i := strings.IndexAny(line, " \t")
		if i <= 0 {
			continue
		}
		name, state := line[:i], strings.TrimSpace(line[i+1:])
		if state == "" || !strings.HasPrefix(name, prefix+"-") {
			continue
		}
		states[name] = NormalizeState(state)
	}
	return states
}

// NormalizeState turns what `podman ps --format {{.State}}` prints into a
// state word. Podman 4.x prints the human status there ("Up 3 seconds ago",
// "Exited (7) 2 minutes ago"); newer versions print the word itself
// ("running"). Both become the word inspect's .State.Status uses:
// "up …" → "running", otherwise the lowercased first word.
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
// (runner.md §7.2): stdout's integer; podman's own status when stdout is
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
// container must not fail task deletion (runner.md §7.4).
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
