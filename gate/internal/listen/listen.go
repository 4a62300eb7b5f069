// Package listen runs the gate's HTTP server on its listening modes
// (docs/gate.md, terok-gate flags): a listener (foreground, detached child, systemd socket
// activation) or one inherited connection (inetd, Accept=yes units).
package listen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// Timeouts of the HTTP layer (docs/gate.md, terok-gate flags). Bodies and responses of
// clones are long, so there is no whole-request read/write timeout here; the
// handler bounds body idleness and the request as a whole.
type Timeouts struct {
	ReadHeader time.Duration // request line + headers
	Idle       time.Duration // keep-alive wait for the next request
	Grace      time.Duration // SIGTERM: how long in-flight requests may run on
	// ConnState, when set, sees every connection's state changes (the
	// open-connections metric).
	ConnState func(net.Conn, http.ConnState)
}

// Defaults for Timeouts.
var DefaultTimeouts = Timeouts{ReadHeader: 10 * time.Second, Idle: 60 * time.Second, Grace: 2 * time.Minute}

func newServer(h http.Handler, t Timeouts, log *slog.Logger) *http.Server {
	if t.ReadHeader <= 0 {
		t.ReadHeader = DefaultTimeouts.ReadHeader
	}
	if t.Idle <= 0 {
		t.Idle = DefaultTimeouts.Idle
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnState:         t.ConnState,
	}
}

// Serve serves ln until ctx is done, then stops accepting and lets
// in-flight requests finish for up to t.Grace before closing them.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, t Timeouts, log *slog.Logger) error {
	srv := newServer(h, t, log)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	grace := t.Grace
	if grace <= 0 {
		grace = DefaultTimeouts.Grace
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests did not finish within the grace period; closing them",
			"grace", grace.String(), "error", err.Error())
		srv.Close()
	}
	<-errc
	return nil
}

// ServeConn serves the requests of one connected socket (inetd mode) and
// returns when the connection is closed or ctx is done.
func ServeConn(ctx context.Context, conn net.Conn, h http.Handler, t Timeouts, log *slog.Logger) error {
	ln := newOneConn(conn)
	srv := newServer(h, t, log)
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed || st == http.StateHijacked {
			ln.finish()
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ln.done:
	case <-ctx.Done():
		grace := t.Grace
		if grace <= 0 {
			grace = DefaultTimeouts.Grace
		}
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}
	srv.Close()
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// oneConn is a listener that yields one connection, then blocks until that
// connection is finished.
type oneConn struct {
	conn net.Conn
	once sync.Once
	mu   sync.Mutex
	used bool
	done chan struct{}
}

func newOneConn(c net.Conn) *oneConn { return &oneConn{conn: c, done: make(chan struct{})} }

func (o *oneConn) finish() { o.once.Do(func() { close(o.done) }) }

func (o *oneConn) Accept() (net.Conn, error) {
	o.mu.Lock()
	if !o.used {
		o.used = true
		o.mu.Unlock()
		return o.conn, nil
	}
	o.mu.Unlock()
	<-o.done
	return nil, net.ErrClosed
}

func (o *oneConn) Close() error   { o.finish(); return nil }
func (o *oneConn) Addr() net.Addr { return o.conn.LocalAddr() }

// InetdConn returns the connected socket on descriptor 0. Descriptors 0 and
// 1 are then pointed at the null device: inetd-style launchers pass the
// socket on both, and a stray copy would keep the connection open after the
// server closed it.
func InetdConn() (net.Conn, error) {
	fd, err := syscall.Dup(0)
	if err != nil {
		return nil, fmt.Errorf("--inetd: descriptor 0: %w", err)
	}
	syscall.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "stdin-socket")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("--inetd: descriptor 0 is not a connected socket: %w", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("--inetd: open %s: %w", os.DevNull, err)
	}
	defer null.Close()
	for _, fd := range []int{0, 1} {
		if err := syscall.Dup3(int(null.Fd()), fd, 0); err != nil {
			c.Close()
			return nil, fmt.Errorf("--inetd: detach descriptor %d from the socket: %w", fd, err)
		}
	}
	return c, nil
}
