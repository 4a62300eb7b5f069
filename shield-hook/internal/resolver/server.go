package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Limits on what the container can make the resolver hold
// (docs/shield-resolver.md, Limits).
const (
	// maxInFlight bounds queries waiting on the upstream; a UDP query
	// over it is dropped (the client retries), a TCP one waits up to
	// tcpQueueWait for a slot.
	maxInFlight = 256
	// maxTCPConns bounds open TCP connections; one over it is closed at
	// once.
	maxTCPConns = 32
	// tcpIdle is how long a TCP connection may take to deliver its next
	// query (a slow sender is closed when it runs out).
	tcpIdle      = 10 * time.Second
	tcpQueueWait = 2 * time.Second
)

// server owns the listening sockets and every goroutine serving them;
// stop closes the sockets and waits for all of them.
type server struct {
	r        *Resolver
	udp      *net.UDPConn
	tcp      *net.TCPListener
	inflight chan struct{}
	tcpSlots chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func newServer(r *Resolver, udp *net.UDPConn, tcp *net.TCPListener) *server {
	ctx, cancel := context.WithCancel(context.Background())
	return &server{
		r: r, udp: udp, tcp: tcp,
		inflight: make(chan struct{}, maxInFlight),
		tcpSlots: make(chan struct{}, maxTCPConns),
		ctx:      ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{},
	}
}

// start serves both sockets; a listener that fails for good reports on
// errc (buffered for both).
func (s *server) start(errc chan<- error) {
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.report(errc, s.serveUDP()) }()
	go func() { defer s.wg.Done(); s.report(errc, s.serveTCP()) }()
}

func (s *server) report(errc chan<- error, err error) {
	if err != nil && s.ctx.Err() == nil {
		errc <- err
	}
}

func (s *server) stop() {
	s.cancel()
	_ = s.udp.Close()
	_ = s.tcp.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *server) serveUDP() error {
	buf := make([]byte, maxQuery+1)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		reply, q := s.r.decide(buf[:n])
		if reply != nil {
			_, _ = s.udp.WriteToUDPAddrPort(reply, from)
			continue
		}
		if q == nil {
			continue
		}
		if b := s.r.cached(q, replyLimit(q.req)); b != nil {
			_, _ = s.udp.WriteToUDPAddrPort(b, from)
			continue
		}
		select {
		case s.inflight <- struct{}{}:
		default:
			continue // over the in-flight bound: drop, the client retries
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.inflight }()
			if b := s.r.forward(s.ctx, q, replyLimit(q.req)); b != nil && s.ctx.Err() == nil {
				_, _ = s.udp.WriteToUDPAddrPort(b, from)
			}
		}()
	}
}

func (s *server) serveTCP() error {
	for {
		c, err := s.tcp.AcceptTCP()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off instead of spinning.
			select {
			case <-s.ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.tcpSlots }()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.serveConn(c)
		}()
	}
}

// serveConn answers length-prefixed queries one after another until the
// client closes, idles out or sends something that is not a query.
func (s *server) serveConn(c net.Conn) {
	var hdr [2]byte
	buf := make([]byte, maxQuery)
	for {
		if err := c.SetDeadline(time.Now().Add(tcpIdle)); err != nil {
			return
		}
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if n < 12 || n > maxQuery {
			return
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		reply, q := s.r.decide(buf[:n])
		if q != nil {
			t := time.NewTimer(tcpQueueWait)
			select {
			case s.inflight <- struct{}{}:
				t.Stop()
			case <-t.C:
				return
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			reply = s.r.forward(s.ctx, q, maxTCPMessage)
			<-s.inflight
		}
		if reply == nil {
			return
		}
		out := make([]byte, 2+len(reply))
		binary.BigEndian.PutUint16(out, uint16(len(reply)))
		copy(out[2:], reply)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
