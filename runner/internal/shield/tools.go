package shield

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Tools finds and runs the external programs the shield drives (podman,
// nft, nsenter, dnsmasq, dig, getent). Tests point Path at a directory of
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
