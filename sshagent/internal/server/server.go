// Package server accepts agent connections (TCP or unix), authenticates each
// with the phantom-token handshake and serves the token's project's keys
// through a restricted agent (docs/ssh-agent.md, Design choices and why).
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/sshagent/internal/handshake"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/metrics"
	"terok.dev/sandbox/sshagent/internal/protocol"
	"terok.dev/sandbox/sshagent/internal/restricted"
)

// TokenLookup resolves phantom tokens (creddb.DB satisfies it).
type TokenLookup interface {
	LookupToken(ctx context.Context, tok string) (creddb.TokenInfo, error)
}

// Defaults for Options fields left zero.
const (
	DefaultMaxConns    = 128
	DefaultIdleTimeout = 10 * time.Minute
	DefaultBodyTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	Tokens TokenLookup
	// TaskGone reports whether a token's container has ended
	// (creddb.DB.TaskGone); nil: bound tokens are refused.
	TaskGone func(creddb.TokenInfo) bool
	// TaskEnd, when set, says how a gone token's task ended
	// (creddb.DB.TaskEnd), for the handshake's task-gone record.
	TaskEnd          func(creddb.TokenInfo) (string, bool)
	Keys             *keys.Store
	Log              *slog.Logger
	MaxConns         int           // concurrent sessions; excess connections are closed at once
	HandshakeTimeout time.Duration // per handshake read (5 s)
	IdleTimeout      time.Duration // between agent messages
	BodyTimeout      time.Duration // rest of a frame, each reply write, token lookup
	MaxMessage       int           // agent frame limit (256 KiB)
	// Audit receives one record per signature and per refusal
	// (docs/audit.md, Channel ssh); nil writes none.
	Audit *audit.Writer
	// Metrics counts connections, token lookups, signatures and refusals
	// (docs/ssh-agent.md, Metrics); nil counts nothing.
	Metrics *metrics.Metrics
}

// Server serves sessions. Serve may be called for several listeners.
type Server struct {
	o     Options
	log   *slog.Logger
	warn  *rateLog
	slots chan struct{}

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New checks the options and fills defaults.
func New(o Options) (*Server, error) {
	if o.Tokens == nil || o.Keys == nil {
		return nil, errors.New("server: token lookup and key store are required")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = handshake.DefaultTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.MaxMessage <= 0 || o.MaxMessage > protocol.MaxMessage {
		o.MaxMessage = protocol.MaxMessage
	}
	return &Server{o: o, log: o.Log, warn: newRateLog(o.Log, time.Second), slots: make(chan struct{}, o.MaxConns), conns: map[net.Conn]struct{}{}}, nil
}

// Serve accepts connections on ln until ln is closed (returns nil) or Accept
// fails permanently. Sessions keep running after Serve returns; Shutdown
// ends them.
func (s *Server) Serve(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and friends: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		delay = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.warn.Warn(s.log, "limit", "connection limit reached; closing new connection (raise --max-connections if this is legitimate load)",
				"remote", c.RemoteAddr().String(), "max", s.o.MaxConns)
			c.Close()
			continue
		}
		if !s.track(c, true) {
			<-s.slots
			c.Close()
			return nil
		}
		s.o.Metrics.Conn(1)
		go func() {
			defer s.wg.Done()
			defer s.o.Metrics.Conn(-1)
			defer func() { <-s.slots }()
			defer s.track(c, false)
			defer c.Close()
			s.session(c)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1) // under mu, so never concurrent with Shutdown's Wait at zero
	} else {
		delete(s.conns, c)
	}
	return true
}

// Shutdown refuses new sessions, waits for running ones until ctx is done,
// then closes those still open and waits for them to end.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
}

func peerOf(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return c.LocalAddr().Network() + ":" + c.LocalAddr().String()
}

// HealthToken is the handshake "token" of a health request (docs/ssh-agent.md,
// "Health"): no phantom token has this form. The agent answers one line,
// "ok\n" when its credentials database answers a lookup, else
// "error database\n", and closes the connection. Nothing else is revealed.
const HealthToken = "terok-health"

func (s *Server) health(c net.Conn, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.BodyTimeout)
	_, err := s.o.Tokens.LookupToken(ctx, HealthToken)
	cancel()
	reply := "ok\n"
	if err != nil && !errors.Is(err, creddb.ErrNotFound) {
		log.Error("health: token lookup failed (check the credentials database)", "err", err)
		reply = "error database\n"
	}
	_ = c.SetWriteDeadline(time.Now().Add(s.o.BodyTimeout))
	_, _ = io.WriteString(c, reply)
}

// refuse writes the audit record of a connection refused before any agent
// message was served.
func (s *Server) refuse(base audit.Record, reason string) {
	s.o.Metrics.Refuse(reason)
	base.Channel, base.Event, base.Outcome, base.Reason = "ssh", "refused", "refused", reason
	if err := s.o.Audit.Write(base); err != nil {
		s.log.Error("cannot write the audit record; check the audit file's directory and disk space", "err", err)
	}
}

func (s *Server) session(c net.Conn) {
	peer := peerOf(c)
	log := s.log.With("remote", peer)
	tok, err := handshake.Read(c, s.o.HandshakeTimeout)
	if err != nil {
		log.Debug("handshake failed; connection closed", "err", err)
		return
	}
	if tok == HealthToken {
		s.health(c, log)
		return
	}
	base := audit.Record{TokenPrefix: audit.TokenPrefix(tok), Fields: map[string]any{"remote": peer}}
	if tok == creddb.StaticMarker || !tokenid.Valid(tokenid.PhantomPrefix, tok) {
		s.o.Metrics.Lookup("unknown") // not even the form of a phantom token
		s.warn.Warn(log, "unknown", "unknown SSH agent token; connection closed", "token_prefix", tokenid.Show(tok))
		s.refuse(base, "unknown-token")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.BodyTimeout)
	info, err := s.o.Tokens.LookupToken(ctx, tok)
	cancel()
	switch {
	case errors.Is(err, creddb.ErrNotFound):
		s.o.Metrics.Lookup("unknown")
	case err != nil:
		s.o.Metrics.Lookup("error")
	case info.Expired(time.Now()):
		s.o.Metrics.Lookup("expired")
	default:
		s.o.Metrics.Lookup("found")
	}
	if errors.Is(err, creddb.ErrNotFound) {
		s.warn.Warn(log, "unknown", "unknown SSH agent token; connection closed (the task's token may have been revoked)",
			"token_prefix", tokenid.Show(tok))
		s.refuse(base, "unknown-token")
		return
	}
	if err != nil {
		log.Error("token lookup failed; connection closed (check the credentials database)", "err", err)
		return
	}
	if info.Provider != creddb.SSHProvider {
		s.warn.Warn(log, "provider", "token is not an SSH agent token; connection closed",
			"token_prefix", tokenid.Show(tok), "provider", info.Provider, "project", info.Project)
		base.Project, base.Task = info.Project, info.Task
		s.refuse(base, "wrong-provider")
		return
	}
	log = log.With("project", info.Project, "task", info.Task)
	base.Project, base.Task = info.Project, info.Task
	if info.Expired(time.Now()) {
		s.warn.Warn(log, "expired", "SSH agent token has expired; connection closed (issue the task a new one with 'terok-sandbox ssh token create')",
			"token_prefix", tokenid.Show(tok), "expired_at", info.Expires.Format(time.RFC3339))
		s.refuse(base, "expired")
		return
	}
	gone := func() bool {
		if info.Container == "" {
			return false
		}
		return s.o.TaskGone == nil || s.o.TaskGone(info)
	}
	if gone() {
		s.warn.Warn(log, "task-gone", "SSH agent token's container has ended; connection closed",
			"token_prefix", tokenid.Show(tok), "container", info.Container)
		base.Container = info.Container
		if s.o.TaskEnd != nil {
			if end, ok := s.o.TaskEnd(info); ok {
				base.Fields["task_end"] = end
			}
		}
		s.refuse(base, "task-gone")
		return
	}
	ks := s.o.Keys.Project(info.Project)
	if len(ks) == 0 {
		s.warn.Warn(log, "nokeys", "project has no loadable SSH key; connection closed (check ssh-keys.json and the key files, e.g. with 'terok-sandbox ssh list')")
		s.refuse(base, "no-key")
		return
	}
	log.Debug("session started", "keys", len(ks))
	a := restricted.New(ks, log)
	a.SetAudit(s.o.Audit, base)
	a.SetExpiry(info.Expires)
	a.SetGone(gone)
	a.SetMetrics(s.o.Metrics)
	err = protocol.Serve(c, a, protocol.Limits{
		MaxMessage:  s.o.MaxMessage,
		Idle:        s.o.IdleTimeout,
		BodyTimeout: s.o.BodyTimeout,
	})
	var ne net.Error
	switch {
	case err == nil || errors.Is(err, net.ErrClosed):
		log.Debug("session ended")
	case errors.Is(err, protocol.ErrFrame):
		s.warn.Warn(log, "frame", "agent frame of invalid size; connection closed", "err", err)
	case errors.As(err, &ne) && ne.Timeout():
		log.Info("session timed out; connection closed", "err", err)
	default:
		log.Debug("session ended", "err", err)
	}
}
