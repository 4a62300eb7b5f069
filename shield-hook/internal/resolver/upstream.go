package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Upstream exchange bounds (docs/shield-resolver.md, Forwarding).
const (
	upstreamTimeout = 2 * time.Second
	upstreamTries   = 2
	// upstreamReadBuf holds any UDP answer to a query that advertised
	// ednsSize; a larger datagram is cut short, fails to parse and is
	// ignored like any other stray packet.
	upstreamReadBuf = 4096
)

// upstream is the forwarder of upstream.dns. Every exchange uses a fresh
// socket (a new random source port as well as a new random ID, against
// spoofed answers) carrying mark, the only packets the output chain lets
// through to the forwarder's port 53.
type upstream struct {
	addr    netip.AddrPort
	mark    uint32
	timeout time.Duration
	tries   int
}

func (u *upstream) dialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(u.mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK on the upstream socket: %w", serr)
		}
		return nil
	}}
}

// exchange sends out (one question, its ID replaced for each try) and
// returns the first answer whose ID and question match, over UDP and,
// when that answer is truncated, over TCP.
func (u *upstream) exchange(ctx context.Context, out *dns.Msg) (*dns.Msg, error) {
	var last error
	for try := 0; try < u.tries; try++ {
		out.Id = dns.Id()
		pkt, err := out.Pack()
		if err != nil {
			return nil, fmt.Errorf("pack upstream query: %w", err)
		}
		resp, err := u.udp(ctx, pkt, out)
		if err == nil && resp.Truncated {
			resp, err = u.tcp(ctx, pkt, out)
		}
		if err == nil {
			return resp, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("upstream %s: %w", u.addr, last)
}

func (u *upstream) deadline(ctx context.Context) time.Time {
	d := time.Now().Add(u.timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		d = cd
	}
	return d
}

func (u *upstream) udp(ctx context.Context, pkt []byte, out *dns.Msg) (*dns.Msg, error) {
	c, err := u.dialer().DialContext(ctx, "udp", u.addr.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if err := c.SetDeadline(u.deadline(ctx)); err != nil {
		return nil, err
	}
	if _, err := c.Write(pkt); err != nil {
		return nil, err
	}
	buf := make([]byte, upstreamReadBuf)
	for {
		// The socket is connected, so only datagrams from the forwarder's
		// address and port arrive; a wrong ID or question (a late answer
		// to an earlier try, or a forgery) is skipped, not fatal.
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		resp := new(dns.Msg)
		if resp.Unpack(buf[:n]) == nil && matches(resp, out) {
			return resp, nil
		}
	}
}

func (u *upstream) tcp(ctx context.Context, pkt []byte, out *dns.Msg) (*dns.Msg, error) {
	c, err := u.dialer().DialContext(ctx, "tcp", u.addr.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if err := c.SetDeadline(u.deadline(ctx)); err != nil {
		return nil, err
	}
	msg := make([]byte, 2+len(pkt))
	binary.BigEndian.PutUint16(msg, uint16(len(pkt)))
	copy(msg[2:], pkt)
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	resp := new(dns.Msg)
	if err := resp.Unpack(body); err != nil {
		return nil, fmt.Errorf("unpack TCP answer: %w", err)
	}
	if !matches(resp, out) {
		return nil, errors.New("TCP answer does not match the query")
	}
	return resp, nil
}

// matches reports whether resp answers out: a response with out's ID and
// exactly out's question (names compared without case).
func matches(resp, out *dns.Msg) bool {
	if !resp.Response || resp.Id != out.Id || len(resp.Question) != 1 || resp.Opcode != dns.OpcodeQuery {
		return false
	}
	a, b := resp.Question[0], out.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
