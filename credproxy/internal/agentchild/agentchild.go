// Package agentchild runs the SSH agent next to the proxy as a supervised
// terok-ssh-agent child (docs/credential-proxy.md, Design and the team decision):
// a daemon never imports another daemon's module, so the proxy starts the
// agent binary with the same database, keys file and port, restarts it
// with backoff when it dies, and forwards SIGTERM when the proxy stops.
package agentchild

import (
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
	"syscall"
	"time"
)

// Binary is the agent executable's name.
const Binary = "terok-ssh-agent"

// Config is how the child is started.
type Config struct {
	// Path of the terok-ssh-agent executable (see Find).
	Path     string
	DBPath   string
	KeysFile string
	Port     int
	LogLevel string
	LogFile  string // "" = inherit the proxy's stderr
	// AuditFile is the child's --audit-file (a path or off); "" lets the
	// agent take its default.
	AuditFile string
	// TaskEnds is the child's --task-ends, the proxy's own directory, so
	// both refuse the same tokens.
	TaskEnds string
	// LogFormat is the child's --log-format (text or json); "" its default.
	LogFormat string
	Stderr    io.Writer
	Log       *slog.Logger
	// Backoff bounds; zero values mean 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// StopTimeout is how long a SIGTERMed child may take before SIGKILL.
	StopTimeout time.Duration
}

// Find locates terok-ssh-agent next to the running executable, else on PATH.
func Find() (string, error) {
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		cand := filepath.Join(filepath.Dir(self), Binary)
		if fi, err := os.Stat(cand); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	p, err := exec.LookPath(Binary)
	if err != nil {
		return "", fmt.Errorf("cannot find %s next to the proxy or on PATH; install terok-sandbox (make install) so the SSH agent can run", Binary)
	}
	return filepath.Abs(p)
}

// Args is the child's command line after the program name.
func (c Config) Args() []string {
	a := []string{
		"--db-path=" + c.DBPath,
		"--ssh-keys-file=" + c.KeysFile,
		"--port=" + strconv.Itoa(c.Port),
		"--bind=127.0.0.1",
	}
	if c.LogLevel != "" {
		a = append(a, "--log-level="+c.LogLevel)
	}
	if c.LogFile != "" {
		a = append(a, "--log-file="+c.LogFile)
	}
	if c.LogFormat != "" {
		a = append(a, "--log-format="+c.LogFormat)
	}
	if c.AuditFile != "" {
		a = append(a, "--audit-file="+c.AuditFile)
	}
	if c.TaskEnds != "" {
		a = append(a, "--task-ends="+c.TaskEnds)
	}
	return a
}

// Run keeps the child alive until ctx ends, then stops it with SIGTERM
// (SIGKILL after StopTimeout) and returns once it has exited.
func Run(ctx context.Context, c Config) {
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 12 * time.Second // the agent's own shutdown grace is 10 s
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	backoff := c.MinBackoff
	for {
		started := time.Now()
		err := runOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > 2*c.MaxBackoff {
			backoff = c.MinBackoff // it ran fine for a while; start over
		}
		c.Log.Error("SSH agent child exited; restarting", "error", err.Error(), "restart_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
		if backoff > c.MaxBackoff {
			backoff = c.MaxBackoff
		}
	}
}

// runOnce starts the child and waits for it or for ctx.
func runOnce(ctx context.Context, c Config) error {
	cmd := exec.Command(c.Path, c.Args()...)
	cmd.Env = childEnv(os.Environ())
	cmd.Stdin = nil
	cmd.Stdout = nil
	cmd.Stderr = c.Stderr
	// The child dies with the proxy even when the proxy is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.Path, err)
	}
	c.Log.Info("Started SSH agent child", "pid", cmd.Process.Pid, "port", c.Port)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			err = errors.New("exited with status 0")
		}
		return err
	case <-ctx.Done():
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(c.StopTimeout):
		c.Log.Warn("SSH agent child ignored SIGTERM; killing it", "pid", cmd.Process.Pid)
		_ = cmd.Process.Kill()
		<-done
	}
	return ctx.Err()
}

// childEnv drops systemd's socket-activation and notify variables: the
// sockets passed to the proxy are the proxy's, never the agent's, and the
// proxy's unit hears readiness from the proxy alone (NotifyAccess=main
// would log the child's READY=1 as refused).
func childEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if strings.HasPrefix(e, "LISTEN_PID=") || strings.HasPrefix(e, "LISTEN_FDS=") || strings.HasPrefix(e, "LISTEN_FDNAMES=") ||
			strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			continue
		}
		out = append(out, e)
	}
	return out
}
