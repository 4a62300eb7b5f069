package podman

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// ReadyMarker is the log line text a task container prints when its
// workspace is ready (runner.md §2).
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
// trimmed non-empty line to out until ready returns true for one (runner.md
// §7.1). follow=false reads the logs once without -f (ready may be nil).
// timeout <= 0 waits indefinitely. Read errors go to the debug log.
func (p Podman) StreamLogs(ctx context.Context, out io.Writer, name string, follow bool, timeout time.Duration, ready func(string) bool) (LogOutcome, error) {
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
	args := []string{"logs"}
	if follow {
		args = append(args, "-f")
	}
	args = append(args, name)
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
	defer func() {
		stopRead()
		cancel()
		_ = cmd.Wait()
		_ = pr.Close()
	}()

	matched, readErr := scanLines(pr, out, ready)
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
	}
	return LogEnded, nil
}

// scanLines applies the line rules of §7.1 to r: UTF-8 with invalid bytes
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
