// Package daemonctl is the one lifecycle of the host daemons (gate,
// credential proxy, standalone SSH agent): systemd user units with a
// version stamp, or a detached process tracked by a PID file whose identity
// is checked through /proc (docs/gate.md, Operating it;
// docs/credential-proxy.md, Operating it). What differs between the daemons
// is data (Daemon: binary, units, templates, values, PID file, port); the
// skeleton is Manager, with GateManager and ProxyManager adding their own
// status, start and ensure; the operator-facing errors are Message,
// ErrNoSystemd and ErrNoSystemdUninstall.
package daemonctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/config"
)

// Systemd talks to the user instance through systemctl. The zero value uses
// the systemctl found on PATH.
type Systemd struct {
	// Systemctl is the program to run; "" means "systemctl".
	Systemctl string
	// System talks to the system manager instead of the user's (root's
	// units in /etc/systemd/system, docs/operations.md, Set up a host in one call).
	System bool
}

// scopeArgs is the manager flag of every call.
func (s Systemd) scopeArgs(args []string) []string {
	if s.System {
		return append([]string{"--system"}, args...)
	}
	return append([]string{"--user"}, args...)
}

func (s Systemd) run(ctx context.Context, timeout time.Duration, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prog := s.Systemctl
	if prog == "" {
		prog = "systemctl"
	}
	cmd := exec.CommandContext(ctx, prog, s.scopeArgs(args)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		code = ee.ExitCode()
		err = nil
	default:
		return out.String(), -1, fmt.Errorf("systemctl %s: %w", strings.Join(s.scopeArgs(args), " "), err)
	}
	if code != 0 && errb.Len() > 0 {
		return out.String() + errb.String(), code, nil
	}
	return out.String(), code, nil
}

// Available: `systemctl --user is-system-running` exits 0 (running) or 1
// (degraded, starting, stopping) within 5 s. Exit 1 with "offline" means no
// user manager answers (e.g. systemd is not PID 1), which is unavailable:
// installing units there would only fail later with a vaguer error.
func (s Systemd) Available(ctx context.Context) bool {
	out, code, err := s.run(ctx, 5*time.Second, "is-system-running")
	if err != nil {
		return false
	}
	state := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	return code == 0 || (code == 1 && state != "offline" && state != "")
}

// IsActive: `systemctl --user is-active UNIT` prints exactly "active".
func (s Systemd) IsActive(ctx context.Context, unit string) bool {
	out, _, err := s.run(ctx, 5*time.Second, "is-active", unit)
	return err == nil && strings.TrimSpace(out) == "active"
}

// Call runs one systemctl --user command with a 10 s timeout; a non-zero exit
// is an error carrying systemctl's output.
func (s Systemd) Call(ctx context.Context, args ...string) error {
	out, code, err := s.run(ctx, 10*time.Second, args...)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("systemctl %s failed (exit %d): %s", strings.Join(s.scopeArgs(args), " "), code, strings.TrimSpace(out))
	}
	return nil
}

// UserUnitDir is the systemd user unit directory, refused for root and when
// XDG_CONFIG_HOME points outside the home directory (docs/config.md, Other locations).
func UserUnitDir(env config.Env) (string, error) {
	if env.EUID == 0 {
		return "", errors.New("refusing to install systemd user units as root; run as the user who runs the tasks, or use the daemon mode (--daemon)")
	}
	dir := env.SystemdUserUnitDir()
	home := filepath.Clean(env.Home)
	if rel, err := filepath.Rel(home, dir); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("systemd user unit directory %s is outside the home directory %s; unset XDG_CONFIG_HOME or point it inside the home directory", dir, home)
	}
	return dir, nil
}

// Render replaces every {{NAME}} in tmpl with vals[NAME]. A value with CR, LF
// or NUL is refused (it could inject unit directives); a value with
// whitespace, quotes or backslashes is refused too, since unit paths here
// never need them and quoting differs between directives.
//
// Values are checked in name order, so several bad values always name the
// same one, and replaced in one pass, so a value that itself reads {{OTHER}}
// is never expanded and is refused below as an unfilled placeholder whatever
// the map order (a loop of ReplaceAll over the map expanded it or not at
// random).
func Render(tmpl string, vals map[string]string) (string, error) {
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	slices.Sort(names)
	pairs := make([]string, 0, 2*len(names))
	for _, k := range names {
		v := vals[k]
		if strings.ContainsAny(v, "\r\n\x00") {
			return "", fmt.Errorf("unit value for %s contains a line break or NUL; refusing to render", k)
		}
		if strings.ContainsAny(v, " \t\"'\\") {
			return "", fmt.Errorf("unit value for %s (%q) contains whitespace, a quote or a backslash; use a path without them", k, v)
		}
		pairs = append(pairs, "{{"+k+"}}", v)
	}
	out := strings.NewReplacer(pairs...).Replace(tmpl)
	if i := strings.Index(out, "{{"); i >= 0 {
		if j := strings.Index(out[i:], "}}"); j > 0 {
			return "", fmt.Errorf("unit template placeholder %s has no value", out[i:i+j+2])
		}
	}
	return out, nil
}

// Stamp states of an installed unit.
const (
	StampMissing     = -2 // no unit file
	StampUnversioned = -1 // file without a parseable stamp
)

// InstalledVersion reads the first line starting with stampPrefix (e.g.
// "# terok-gate-version:") of the unit at path.
func InstalledVersion(path, stampPrefix string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return StampMissing
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, stampPrefix) {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, stampPrefix)))
			if err != nil {
				return StampUnversioned
			}
			return n
		}
	}
	return StampUnversioned
}

// DescribeVersion renders an installed version for messages: "v6" or "unversioned".
func DescribeVersion(v int) string {
	if v < 0 {
		return "unversioned"
	}
	return "v" + strconv.Itoa(v)
}

// Unit is one rendered unit file.
type Unit struct {
	Name    string
	Content string
}

// Install writes the units into dir, reloads systemd, enables and starts the
// socket and restarts it so a changed port takes effect.
func (s Systemd) Install(ctx context.Context, dir string, units []Unit, socket string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create unit directory %s: %w", dir, err)
	}
	for _, u := range units {
		if err := atomicfile.WriteFile(filepath.Join(dir, u.Name), []byte(u.Content), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", socket}, {"restart", socket}} {
		if err := s.Call(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

// Uninstall disables and stops the socket (errors ignored), removes the unit
// files and reloads systemd.
func (s Systemd) Uninstall(ctx context.Context, dir string, names []string, socket string) error {
	_ = s.Call(ctx, "disable", "--now", socket)
	_ = s.Call(ctx, "daemon-reload")
	for _, n := range names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove unit %s: %w", n, err)
		}
	}
	return s.Call(ctx, "daemon-reload")
}

// LibexecSubdir is where `make install` and the package put executables
// that are not commands (the OCI hook), relative to the directory above
// bin/: $(PREFIX)/libexec/terok (docs/install.md).
const LibexecSubdir = "libexec/terok"

// FindBinary locates an installed executable: next to the running runner
// first (a bin/ directory built together), then in the installation's
// libexec/terok, then on PATH.
func FindBinary(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		dir := filepath.Dir(self)
		for _, cand := range []string{filepath.Join(dir, name), filepath.Join(filepath.Dir(dir), LibexecSubdir, name)} {
			if fi, err := os.Stat(cand); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return cand, nil
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	//lint:ignore ST1005 operators know this wording from the earlier tool; kept as is
	return "", fmt.Errorf("Cannot find '%s' on PATH. Install terok-sandbox (make install) or put %s on PATH", name, name)
}
