// Package decider is the resident helper's end of the interactive decider
// protocol (docs/shield.md, Interactive decider protocol): a unix socket in
// the container's shield state directory on which one `terok-sandbox shield
// interactive` at a time attaches, is shown each held connection and
// answers it. Whatever goes wrong (no decider, a decider that is slow,
// gone, busy or speaks garbage) the answer is refuse, with the reason.
package decider

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// Reasons for a refusal the decider did not choose (audited as the
// decision's reason).
const (
	ReasonNoDecider = "no-decider" // nobody attached
	ReasonTimeout   = "timeout"    // no answer in time
	ReasonGone      = "decider-gone"
	ReasonBusy      = "too-many-held" // MaxPending questions already open
	ReasonDecided   = "decided"       // the decider answered
)

// MaxPending bounds the questions open at once; the kernel's queue
// (nfqueue.MaxHeld) bounds the held packets themselves.
const MaxPending = 64

// Answer is the outcome of one question.
type Answer struct {
	Verdict string // shieldbundle.VerdictOnce, VerdictAlways or VerdictRefuse
	Reason  string
}

// Logf is where the server logs (the resolver's bounded dns.log).
type Logf func(level slog.Level, msg string, attrs ...slog.Attr)

// Server is the listening socket and the attached decider, if any.
type Server struct {
	ln      *net.UnixListener
	path    string
	timeout time.Duration
	uid     int // the only peer uid let in
	log     Logf

	mu      sync.Mutex
	cur     *session
	next    uint64
	pending map[uint64]chan string
	// open is the open question of each destination: a packet to a
	// destination already asked about waits for that answer instead of
	// becoming a question of its own (a SYN's retransmissions, or a task
	// that repeats one connection to bury the operator in questions).
	open   map[heldKey]*question
	closed bool
	wg     sync.WaitGroup
}

// heldKey is a destination as the decider is asked about it.
type heldKey struct {
	proto, dst string
	port       uint16
}

// question is one open question; ans is set before done is closed.
// joined counts the packets waiting for it besides the first (under the
// server's mutex).
type question struct {
	done   chan struct{}
	ans    Answer
	joined int
}

type session struct {
	c    *net.UnixConn
	gone chan struct{}
}

// Listen creates the socket at path (replacing a stale one) with mode
// 0600, for peers of the helper's own effective uid. timeout is how long a
// question waits for its answer.
func Listen(path string, timeout time.Duration, log Logf) (*Server, error) {
	return listen(path, timeout, os.Geteuid(), log)
}

func listen(path string, timeout time.Duration, uid int, log Logf) (*Server, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("decider: timeout %v is not positive", timeout)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("decider: remove stale socket %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("decider: listen %s: %w", path, err)
	}
	// A peer that connects between bind and chmod is still checked by uid.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("decider: chmod %s: %w", path, err)
	}
	s := &Server{ln: ln, path: path, timeout: timeout, uid: uid, log: log, pending: map[uint64]chan string{}, open: map[heldKey]*question{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Close stops accepting, detaches the decider, refuses every open question
// (ReasonGone) and removes the socket; it returns when every goroutine of
// the server has ended.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	cur := s.cur
	s.mu.Unlock()
	err := s.ln.Close()
	if cur != nil {
		_ = cur.c.Close()
	}
	s.wg.Wait()
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		s.attach(c)
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// refuseConn tells a peer why it is not attached and closes it.
func refuseConn(c *net.UnixConn, why string) {
	if line, err := shieldbundle.MarshalLine(shieldbundle.DeciderError{Error: why}); err == nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(line)
	}
	_ = c.Close()
}

func (s *Server) attach(c *net.UnixConn) {
	uid, err := peerUID(c)
	if err != nil || uid != s.uid {
		s.log(slog.LevelWarn, "decider refused: wrong owner", slog.Int("peer_uid", uid), slog.Int("want_uid", s.uid))
		refuseConn(c, "not the container's owner")
		return
	}
	s.mu.Lock()
	if s.closed || s.cur != nil {
		s.mu.Unlock()
		refuseConn(c, "another decider is attached")
		return
	}
	ss := &session{c: c, gone: make(chan struct{})}
	s.cur = ss
	s.mu.Unlock()
	s.log(slog.LevelInfo, "decider attached")
	s.wg.Add(1)
	go s.read(ss)
}

// read delivers the decider's answers until it goes away.
func (s *Server) read(ss *session) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.cur = nil
		s.mu.Unlock()
		close(ss.gone)
		_ = ss.c.Close()
		s.log(slog.LevelInfo, "decider detached")
	}()
	r := bufio.NewReaderSize(ss.c, shieldbundle.MaxDeciderLine)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			s.log(slog.LevelWarn, "decider sent an over-long line; detached")
			return
		}
		if err != nil {
			return
		}
		d, err := shieldbundle.ParseDecision(line)
		if err != nil {
			// A decider that cannot speak the protocol must not keep the
			// questions waiting until their timeout: detach it.
			s.log(slog.LevelWarn, "decider sent a bad line; detached", slog.String("error", err.Error()))
			return
		}
		s.mu.Lock()
		ch, ok := s.pending[d.ID]
		if ok {
			delete(s.pending, d.ID)
		}
		s.mu.Unlock()
		if ok {
			ch <- d.Verdict // buffered, one answer per question
		}
	}
}

// Ask shows h (its ID and TimeoutMS are filled in) to the attached decider
// and waits for the answer, at most the server's timeout. While a question
// about h's destination (protocol, address, port) is open, h is not shown
// again: it gets that question's answer.
func (s *Server) Ask(ctx context.Context, h shieldbundle.Held) (ans Answer) {
	key := heldKey{h.Proto, h.Dst, h.Port}
	s.mu.Lock()
	if q := s.open[key]; q != nil {
		q.joined++
		s.mu.Unlock()
		select {
		case <-q.done:
			return q.ans
		case <-ctx.Done():
			return Answer{shieldbundle.VerdictRefuse, ReasonGone}
		}
	}
	ss := s.cur
	if ss == nil || s.closed {
		s.mu.Unlock()
		return Answer{shieldbundle.VerdictRefuse, ReasonNoDecider}
	}
	if len(s.pending) >= MaxPending {
		s.mu.Unlock()
		return Answer{shieldbundle.VerdictRefuse, ReasonBusy}
	}
	s.next++
	h.ID = s.next
	h.TimeoutMS = s.timeout.Milliseconds()
	ch := make(chan string, 1)
	s.pending[h.ID] = ch
	q := &question{done: make(chan struct{})}
	s.open[key] = q
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, h.ID)
		delete(s.open, key)
		joined := q.joined
		s.mu.Unlock()
		q.ans = ans
		close(q.done)
		if joined > 0 {
			s.log(slog.LevelInfo, "repeats joined an open question", slog.Uint64("id", h.ID), slog.Int("packets", joined))
		}
	}()

	line, err := shieldbundle.MarshalLine(h)
	if err != nil {
		s.log(slog.LevelWarn, "held connection not shown", slog.String("error", err.Error()))
		return Answer{shieldbundle.VerdictRefuse, ReasonGone}
	}
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	// A decider that does not read must not block the helper: the write
	// shares the question's deadline.
	_ = ss.c.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := ss.c.Write(line); err != nil {
		_ = ss.c.Close() // detaches it (read returns)
		return Answer{shieldbundle.VerdictRefuse, ReasonGone}
	}
	select {
	case v := <-ch:
		return Answer{v, ReasonDecided}
	case <-timer.C:
		return Answer{shieldbundle.VerdictRefuse, ReasonTimeout}
	case <-ss.gone:
		return Answer{shieldbundle.VerdictRefuse, ReasonGone}
	case <-ctx.Done():
		return Answer{shieldbundle.VerdictRefuse, ReasonGone}
	}
}
