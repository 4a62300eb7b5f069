// Package bridge is the in-container side of the agent (docs/ssh-agent.md, The bridge (inside a container)): a
// unix socket for SSH_AUTH_SOCK whose every client is relayed to the host
// agent over a fresh connection that starts with the phantom-token
// handshake. It replaces the socat + shell bridge.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"terok.dev/sandbox/sshagent/internal/handshake"
)

// Options configure a Bridge.
type Options struct {
	Listen   string                                      // unix socket path for clients
	Dial     func(ctx context.Context) (net.Conn, error) // connects to the host agent
	Token    string
	Attempts int           // dial attempts per client (30)
	Interval time.Duration // between attempts (1 s)
	MaxConns int           // concurrent clients (64)
	Log      *slog.Logger
}

// Bridge relays clients to the agent.
type Bridge struct {
	o     Options
	hello []byte
	ln    net.Listener
}

// Listen validates the options and creates the socket (mode 0600) in a
// private directory, creating the directory 0700 if needed. An existing
// directory must be ours and not accessible to others; a stale socket from
// an earlier run is replaced, a live one is an error.
func Listen(o Options) (*Bridge, error) {
	hello, err := handshake.Encode(o.Token)
	if err != nil {
		return nil, fmt.Errorf("bridge: token: %w", err)
	}
	if o.Dial == nil {
		return nil, errors.New("bridge: no agent address")
	}
	if o.Attempts <= 0 {
		o.Attempts = 30
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if !filepath.IsAbs(o.Listen) {
		return nil, fmt.Errorf("bridge: socket path %q must be absolute", o.Listen)
	}
	if err := privateDir(filepath.Dir(o.Listen)); err != nil {
		return nil, err
	}
	if err := removeStale(o.Listen); err != nil {
		return nil, err
	}
	// The directory is private, so the moment before chmod exposes nothing.
	ln, err := net.Listen("unix", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("bridge: listen on %s: %w", o.Listen, err)
	}
	if err := os.Chmod(o.Listen, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("bridge: chmod %s: %w", o.Listen, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	return &Bridge{o: o, hello: hello, ln: ln}, nil
}

func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bridge: create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("bridge: %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("bridge: %s belongs to uid %d, not to us; choose a private directory", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("bridge: %s is accessible to other users (mode %o); use a directory with mode 0700", dir, fi.Mode().Perm())
	}
	return nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("bridge: %s exists and is not a socket; remove it or choose another path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("bridge: %s is in use by a running bridge", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("bridge: remove stale socket %s: %w", path, err)
	}
	return nil
}

// Addr is the socket path.
func (b *Bridge) Addr() string { return b.o.Listen }

// Serve relays clients until ctx is cancelled, then closes the socket and
// every relay and returns.
func (b *Bridge) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { b.ln.Close() })
	defer stop()
	defer b.ln.Close()
	slots := make(chan struct{}, b.o.MaxConns)
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("bridge: accept: %w", err)
		}
		select {
		case slots <- struct{}{}:
		default:
			b.o.Log.Warn("too many concurrent agent clients; closing one", "max", b.o.MaxConns)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			b.relay(ctx, c)
		}()
	}
}

// dial connects to the agent, retrying while it is not (yet) reachable.
func (b *Bridge) dial(ctx context.Context) (net.Conn, error) {
	var last error
	for i := 0; i < b.o.Attempts; i++ {
		if i > 0 {
			t := time.NewTimer(b.o.Interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := b.o.Dial(dctx)
		cancel()
		if err == nil {
			return c, nil
		}
		last = err
		if i == 0 {
			b.o.Log.Info("agent not reachable yet; retrying", "err", err, "attempts", b.o.Attempts)
		}
	}
	return nil, fmt.Errorf("agent unreachable after %d attempts: %w", b.o.Attempts, last)
}

func (b *Bridge) relay(ctx context.Context, client net.Conn) {
	defer client.Close()
	up, err := b.dial(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.o.Log.Error("cannot reach the terok SSH agent on the host; is it running (terok-sandbox proxy status)?", "err", err)
		}
		return
	}
	defer up.Close()
	if _, err := up.Write(b.hello); err != nil {
		b.o.Log.Error("sending the handshake to the agent failed", "err", err)
		return
	}
	// Either side closing or ctx ending tears both down.
	stop := context.AfterFunc(ctx, func() { client.Close(); up.Close() })
	defer stop()
	fromClient := make(chan struct{})
	fromAgent := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, client)
		closeWrite(up)
		close(fromClient)
	}()
	go func() {
		_, _ = io.Copy(client, up)
		closeWrite(client)
		close(fromAgent)
	}()
	select {
	case <-fromAgent:
		// The agent ended the session: nothing more will be answered.
		client.Close()
		<-fromClient
	case <-fromClient:
		// The client finished sending; let the agent's replies drain. The
		// agent closes its side on seeing EOF.
		<-fromAgent
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}
