// Package nfqueue holds the packets the container's ruleset sends to an
// NFQUEUE queue (docs/shield-resolver.md, Interactive approval): a netlink
// binding of one queue in the resolver's network namespace, a parser of the
// kernel's packet messages and the verdicts that release or drop them.
//
// github.com/florianl/go-nfqueue is not served by the module proxy this
// project builds from, so this is a small client on mdlayher/netlink, like
// internal/nflog. Everything a packet message carries comes from the
// container, so the parser is bounds-checked and fuzzed (FuzzParseMessage).
//
// The queue is bound without NFQA_CFG_F_FAIL_OPEN and the ruleset queues
// without bypass: when no process holds the queue, or the kernel's queue
// is full, the kernel drops the packet. A dead decider refuses.
package nfqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/shield-hook/internal/nfnetlink"
)

// The NFQUEUE netlink protocol (linux/netfilter/nfnetlink_queue.h); x/sys/unix
// has only the subsystem number.
const (
	msgPacket  = 0 // NFQNL_MSG_PACKET
	msgVerdict = 1 // NFQNL_MSG_VERDICT
	msgConfig  = 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1  // NFQA_PACKET_HDR: be32 id, be16 hw_protocol, u8 hook
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR: be32 verdict, be32 id
	attrMark       = 3  // NFQA_MARK
	attrPayload    = 10 // NFQA_PAYLOAD

	cfgCmd      = 1 // NFQA_CFG_CMD: u8 command, u8 pad, be16 pf
	cfgParams   = 2 // NFQA_CFG_PARAMS: be32 copy_range, u8 copy_mode
	cfgQueueLen = 3 // NFQA_CFG_QUEUE_MAXLEN
	cfgMask     = 4 // NFQA_CFG_MASK
	cfgFlags    = 5 // NFQA_CFG_FLAGS

	cmdBind      = 1 // NFQNL_CFG_CMD_BIND
	copyPacket   = 2 // NFQNL_COPY_PACKET
	flagFailOpen = 1 // NFQA_CFG_F_FAIL_OPEN

	verdictDrop   = 0 // NF_DROP
	verdictAccept = 1 // NF_ACCEPT
	verdictRepeat = 4 // NF_REPEAT: run the packet's hook function (the chain) again
)

// Settings of the binding (docs/shield-resolver.md, Interactive approval).
const (
	// CopyRange is how much of each held packet the kernel copies: the
	// IPv6 header, a few extension headers and a TCP header fit in it.
	CopyRange = 128
	// MaxHeld is the kernel's queue length: at most this many packets
	// wait for a verdict at once; the kernel drops what comes beyond it
	// (no fail-open). It is also what bounds the helper's memory for held
	// packets, whatever the container sends.
	MaxHeld = 64
	// ReadBuffer is the socket's receive buffer. MaxHeld messages of
	// CopyRange octets plus their attributes (under 400 octets each) fit
	// in it many times over, so the kernel never drops a packet message
	// for a full buffer: a message lost there would leave its packet held
	// in the kernel, counted against MaxHeld, with no one to release it.
	ReadBuffer = 256 << 10
)

// Packet is one held packet.
type Packet struct {
	// ID names the packet in its verdict.
	ID uint32
	// HWProto is the link-layer protocol (0x0800 IPv4, 0x86dd IPv6).
	HWProto uint16
	// Hook is the netfilter hook the packet was queued at.
	Hook uint8
	Mark uint32
	// Payload is the packet from its IP header on, at most CopyRange octets.
	Payload []byte
}

// Errors of Receive and Parse.
var (
	// ErrOverrun: the kernel dropped packet messages for a full receive
	// buffer (see ReadBuffer); receiving may continue.
	ErrOverrun = errors.New("nfqueue: messages dropped by the kernel (receive buffer full)")
	ErrMessage = errors.New("nfqueue: malformed packet message")
)

// Conn is the binding of one queue in the calling thread's network
// namespace. Receive and Verdict may be called from different goroutines.
type Conn struct {
	c     *netlink.Conn
	queue uint16
}

// Open binds queue in the current network namespace in copy-packet mode,
// without fail-open. It needs CAP_NET_ADMIN over that namespace and fails
// with EBUSY when another socket holds the queue there.
func Open(queue uint16) (*Conn, error) {
	q := &Conn{queue: queue}
	if _, err := nfnetlink.Dial("nfqueue", ReadBuffer, func(c *netlink.Conn) error { q.c = c; return q.configure() }); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *Conn) message(typ int, flags netlink.HeaderFlags, attrs func(ae *netlink.AttributeEncoder)) (netlink.Message, error) {
	return nfnetlink.Message(unix.NFNL_SUBSYS_QUEUE, typ, q.queue, flags, attrs)
}

func (q *Conn) configure() error {
	send := func(what string, attrs func(ae *netlink.AttributeEncoder)) error {
		m, err := q.message(msgConfig, netlink.Request|netlink.Acknowledge, attrs)
		if err != nil {
			return fmt.Errorf("nfqueue: %s: %w", what, err)
		}
		if _, err := q.c.Execute(m); err != nil {
			return fmt.Errorf("nfqueue: %s queue %d: %w", what, q.queue, err)
		}
		return nil
	}
	if err := send("bind", func(ae *netlink.AttributeEncoder) {
		ae.Bytes(cfgCmd, []byte{cmdBind, 0, 0, unix.AF_UNSPEC})
	}); err != nil {
		return err
	}
	return send("configure", func(ae *netlink.AttributeEncoder) {
		params := make([]byte, 5)
		binary.BigEndian.PutUint32(params, CopyRange)
		params[4] = copyPacket
		ae.Bytes(cfgParams, params)
		ae.Uint32(cfgQueueLen, MaxHeld)
		// Clear fail-open explicitly: it is off by default, and a full
		// queue must drop, never pass unexamined.
		ae.Uint32(cfgFlags, 0)
		ae.Uint32(cfgMask, flagFailOpen)
	})
}

// Receive waits for the next batch of held packets and calls fn for each.
// It returns ErrOverrun when the kernel dropped messages, an *VerdictError
// when the kernel refused an earlier verdict (call it again after either),
// net.ErrClosed after Close, or another error for good.
func (q *Conn) Receive(fn func(Packet)) error {
	msgs, err := q.c.Receive()
	if err != nil {
		if nfnetlink.Overrun(err) {
			return ErrOverrun
		}
		if nfnetlink.Closed(err) {
			return net.ErrClosed
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("nfqueue: receive: %w", os.ErrDeadlineExceeded)
		}
		var op *netlink.OpError
		if errors.As(err, &op) {
			// A verdict is sent without waiting for an acknowledgement;
			// the kernel's error for it arrives here.
			return &VerdictError{Err: op.Err}
		}
		return fmt.Errorf("nfqueue: receive: %w", err)
	}
	for _, m := range msgs {
		if p, err := ParseMessage(uint16(m.Header.Type), m.Data); err == nil {
			fn(p)
		}
	}
	return nil
}

// VerdictError is the kernel's refusal of a verdict (e.g. ENOENT for a
// packet id it no longer holds).
type VerdictError struct{ Err error }

func (e *VerdictError) Error() string {
	return "nfqueue: verdict refused by the kernel: " + e.Err.Error()
}
func (e *VerdictError) Unwrap() error { return e.Err }

// Accept releases packet id to continue through the ruleset's next rules.
func (q *Conn) Accept(id uint32) error { return q.verdict(id, verdictAccept) }

// Drop discards packet id.
func (q *Conn) Drop(id uint32) error { return q.verdict(id, verdictDrop) }

// RepeatMarked gives packet id the mark and hands it back to the start of
// the chain that queued it (NF_REPEAT with NFQA_MARK): NFQUEUE has no
// reject, so a refusal is this verdict and a rule at the chain's head
// that rejects packets carrying mark (docs/shield-resolver.md, Interactive
// approval). The kernel keeps the mark on the packet; should the chain
// queue it again (a table without that rule), the packet comes back with
// Mark set, and the caller must drop it rather than repeat it again.
func (q *Conn) RepeatMarked(id, mark uint32) error {
	return q.verdictMark(id, verdictRepeat, &mark)
}

func (q *Conn) verdict(id, v uint32) error { return q.verdictMark(id, v, nil) }

func (q *Conn) verdictMark(id, v uint32, mark *uint32) error {
	m, err := q.message(msgVerdict, netlink.Request, func(ae *netlink.AttributeEncoder) {
		b := make([]byte, 8)
		binary.BigEndian.PutUint32(b, v)
		binary.BigEndian.PutUint32(b[4:], id)
		ae.Bytes(attrVerdictHdr, b)
		if mark != nil {
			mb := make([]byte, 4)
			binary.BigEndian.PutUint32(mb, *mark)
			ae.Bytes(attrMark, mb)
		}
	})
	if err != nil {
		return fmt.Errorf("nfqueue: verdict %d for packet %d: %w", v, id, err)
	}
	if _, err := q.c.Send(m); err != nil {
		return fmt.Errorf("nfqueue: verdict %d for packet %d: %w", v, id, err)
	}
	return nil
}

// ParseMessage reads one NFQUEUE netlink message (its type and the data
// after the netlink header). Anything but a packet message with a packet
// header and a payload is ErrMessage.
func ParseMessage(typ uint16, data []byte) (Packet, error) {
	if typ != unix.NFNL_SUBSYS_QUEUE<<8|msgPacket || len(data) < 4 {
		return Packet{}, ErrMessage
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return Packet{}, ErrMessage
	}
	ad.ByteOrder = binary.BigEndian
	var p Packet
	var hdr bool
	for ad.Next() {
		switch ad.Type() {
		case attrPacketHdr:
			b := ad.Bytes()
			if len(b) < 7 {
				return Packet{}, ErrMessage
			}
			p.ID = binary.BigEndian.Uint32(b)
			p.HWProto = binary.BigEndian.Uint16(b[4:])
			p.Hook = b[6]
			hdr = true
		case attrMark:
			if b := ad.Bytes(); len(b) == 4 {
				p.Mark = binary.BigEndian.Uint32(b)
			}
		case attrPayload:
			p.Payload = ad.Bytes()
		}
	}
	if ad.Err() != nil || !hdr || p.Payload == nil {
		return Packet{}, ErrMessage
	}
	return p, nil
}

// SetReadDeadline bounds the current and future Receive calls: past t they
// return an error wrapping os.ErrDeadlineExceeded.
func (q *Conn) SetReadDeadline(t time.Time) error { return q.c.SetReadDeadline(t) }

// Close releases the queue; a Receive in progress returns net.ErrClosed.
// Packets still held are dropped by the kernel (no fail-open).
func (q *Conn) Close() error { return q.c.Close() }
