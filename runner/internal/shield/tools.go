package shield

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Tools finds and runs the external programs the shield drives (podman,
// nft, nsenter). Tests point Path at a directory of
// their own executables; production uses the process PATH.
type Tools struct {
	// Path is the search path; "" means $PATH.
	Path string
	// Env is the environment for the commands; nil inherits the process's.
	Env []string
}

// LookPath finds name on the search path, then in the fallbacks (absolute
// paths), and returns "" when it is nowhere.
func (t Tools) LookPath(name string, fallbacks ...string) string {
	path := t.Path
	if path == "" {
		path = os.Getenv("PATH")
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	for _, p := range fallbacks {
		if isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Combined is stderr followed by stdout, trimmed (some nft versions report
// errors on stdout).
func (r Result) Combined() string {
	return strings.TrimSpace(strings.TrimSpace(r.Stderr) + "\n" + strings.TrimSpace(r.Stdout))
}

// errTimeout marks a command killed by its timeout.
var errTimeout = errors.New("timed out")

// Run executes argv with stdin and a timeout. A non-zero exit is not an
// error (the caller judges Result.Code); failing to start or timing out is.
func (t Tools) Run(ctx context.Context, timeout time.Duration, stdin string, argv ...string) (Result, error) {
	if len(argv) == 0 {
		return Result{}, fmt.Errorf("no command")
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	if t.Env != nil {
		cmd.Env = t.Env
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errb.String()}
	if cctx.Err() == context.DeadlineExceeded {
		return res, fmt.Errorf("%s %w after %s", argv[0], errTimeout, timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.Code = ee.ExitCode()
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("run %s: %w", argv[0], err)
	}
	return res, nil
}

// specError carries a message whose exact wording the spec fixes
// (capitalised, sometimes ending in a sentence), which Go's error-string
// conventions would otherwise reshape.
type specError struct{ err error }

func (e *specError) Error() string { return e.err.Error() }
func (e *specError) Unwrap() error { return e.err }

// specErrorf formats a spec-worded error (%w wraps as with fmt.Errorf).
func specErrorf(format string, a ...any) error { return &specError{fmt.Errorf(format, a...)} }

// RunInNetns is Run with the command in the network namespace of pid,
// without an nsenter exec in between (~1.4 ms saved per command here): the
// command is forked from an OS thread that joined that namespace (setns;
// the child inherits the thread's namespaces). The thread stays locked
// until it is back in its own namespace; if that switch back fails it is
// never unlocked and ends with its goroutine, so no other goroutine ever
// runs in the container's namespace (always switching back also keeps the
// main thread, which the runtime cannot discard, out of it). The Go runtime
// starts new threads from its template thread, never from a locked one.
// Needs CAP_SYS_ADMIN (root); any setns failure is returned and the caller
// falls back to nsenter.
func (t Tools) RunInNetns(ctx context.Context, timeout time.Duration, pid int, argv ...string) (Result, error) {
	type outcome struct {
		res Result
		err error
	}
	ch := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- outcome{err: err}
			return
		}
		defer orig.Close()
		f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- outcome{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- outcome{err: fmt.Errorf("join network namespace of %d: %w", pid, err)}
			return
		}
		res, err := t.Run(ctx, timeout, "", argv...)
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- outcome{res, err}
	}()
	o := <-ch
	return o.res, o.err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
