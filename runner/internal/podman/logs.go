package podman

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ReadyMarker is the log line text a task container prints when its
// workspace is ready (docs/runner.md, `run`).
const ReadyMarker = ">> init complete"

// MaxLineBytes caps one log line: a container that never prints a newline
// cannot make the runner buffer without bound; longer lines are split.
const MaxLineBytes = 64 << 10

// LogOutcome is how log streaming ended.
type LogOutcome int

// Outcomes of StreamLogs.
const (
	// LogReady: a line satisfied the ready check.
	LogReady LogOutcome = iota
	// LogTimeout: the timeout elapsed first.
	LogTimeout
	// LogEnded: the log process ended (container gone or exited) without a
	// matching line.
	LogEnded
	// LogError: podman could not be started or reading failed.
	LogError
)

func (o LogOutcome) String() string {
	switch o {
	case LogReady:
		return "ready"
	case LogTimeout:
		return "timeout"
	case LogEnded:
		return "ended"
	default:
		return "error"
	}
}

// ContainsMarker returns the default ready check for marker.
func ContainsMarker(marker string) func(string) bool {
	return func(line string) bool { return strings.Contains(line, marker) }
}

// StreamLogs follows `podman logs -f` (stderr merged) and prints every
// trimmed non-empty line to out until ready returns true for one
// (docs/runner.md, Runtime helpers). follow=false reads the logs once without -f (ready may be nil).
// timeout <= 0 waits indefinitely. Read errors go to the debug log.
func (p Podman) StreamLogs(ctx context.Context, out io.Writer, name string, follow bool, timeout time.Duration, ready func(string) bool) (LogOutcome, error) {
	return p.StreamLogsWith(ctx, out, name, LogOptions{Follow: follow, Tail: -1}, timeout, ready)
}

// LogOptions select which log lines `podman logs` prints.
type LogOptions struct {
	// Follow keeps reading new lines (podman logs -f).
	Follow bool
	// Tail, when >= 0, starts with the last Tail lines (podman --tail).
	Tail int
	// Since, when not empty, is podman's --since value (a timestamp or a
	// duration such as 10m); it is passed as one --since=VALUE argument.
	Since string
}

// Args are the podman arguments of `podman logs` for name.
func (o LogOptions) Args(name string) []string {
	args := []string{"logs"}
	if o.Follow {
		args = append(args, "-f")
	}
	if o.Tail >= 0 {
		args = append(args, "--tail="+strconv.Itoa(o.Tail))
	}
	if o.Since != "" {
		args = append(args, "--since="+o.Since)
	}
	return append(args, "--", name)
}

// StreamLogsWith is StreamLogs with the line selection of o. A podman that
// exits non-zero by itself (no such container) is an error, not LogEnded.
func (p Podman) StreamLogsWith(ctx context.Context, out io.Writer, name string, o LogOptions, timeout time.Duration, ready func(string) bool) (LogOutcome, error) {
	if ready == nil {
		ready = func(string) bool { return false }
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if timeout > 0 {
		var c2 context.CancelFunc
		sctx, c2 = context.WithTimeout(sctx, timeout)
		defer c2()
	}
	args := o.Args(name)
	pr, pw, err := os.Pipe()
	if err != nil {
		return LogError, fmt.Errorf("logs %s: %w", name, err)
	}
	cmd := p.Command(sctx, args...)
	cmd.Stdout, cmd.Stderr = pw, pw // merged, like 2>&1
	if err := cmd.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		if IsNotFound(err) {
			return LogError, ErrNotFound
		}
		return LogError, fmt.Errorf("podman logs %s: %w", name, err)
	}
	_ = pw.Close() // the child holds the write end now
	// Ending the context (timeout, ready, caller) kills podman and unblocks
	// the reader by closing the read end.
	stopRead := context.AfterFunc(sctx, func() { _ = pr.Close() })
	waited := false
	var waitErr error
	defer func() {
		stopRead()
		cancel()
		if !waited {
			_ = cmd.Wait()
		}
		_ = pr.Close()
	}()

	matched, readErr := scanLines(pr, out, ready)
	if !matched && sctx.Err() == nil {
		// The log ended by itself: podman's status says whether it was
		// the end of the log or a failure.
		waitErr, waited = cmd.Wait(), true
	}
	switch {
	case matched:
		return LogReady, nil
	case sctx.Err() != nil && ctx.Err() == nil:
		return LogTimeout, nil
	case ctx.Err() != nil:
		return LogError, ctx.Err()
	case readErr != nil:
		p.Debug.Warning("logs %s: read error: %v", name, readErr)
		return LogError, fmt.Errorf("read logs of %s: %w", name, readErr)
	case waitErr != nil:
		return LogError, fmt.Errorf("podman logs %s: %w", name, waitErr)
	}
	return LogEnded, nil
}

// scanLines applies the line rules (docs/runner.md, Runtime helpers) to r: UTF-8 with invalid bytes
// replaced, trimmed, empty lines skipped, printed, then checked. It returns
// at the first match; at EOF a final unterminated line is processed too.
func scanLines(r io.Reader, out io.Writer, ready func(string) bool) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	sc.Split(splitLines)
	for sc.Scan() {
		line := strings.TrimSpace(strings.ToValidUTF8(sc.Text(), "\uFFFD"))
		if line == "" {
			continue
		}
		if out != nil {
			fmt.Fprintln(out, line)
		}
		if ready(line) {
			return true, nil
		}
	}
	err := sc.Err()
	if err != nil && isClosedPipe(err) {
		err = nil
	}
	return false, err
}

// splitLines is bufio.ScanLines that also emits a full buffer without a
// newline as a line, so an endless line cannot stop the scan.
func splitLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, bytes.TrimSuffix(data[:i], []byte("\r")), nil
	}
	if len(data) >= MaxLineBytes {
		return len(data), data, nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func isClosedPipe(err error) bool {
	return strings.Contains(err.Error(), "file already closed")
}
