package nflog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/shield-hook/internal/nfnetlink"
)

// The NFLOG netlink protocol (linux/netfilter/nfnetlink_log.h); x/sys/unix
// has only the subsystem number.
const (
	msgPacket = 0 // NFULNL_MSG_PACKET
	msgConfig = 1 // NFULNL_MSG_CONFIG

	attrPayload = 9  // NFULA_PAYLOAD
	attrPrefix  = 10 // NFULA_PREFIX
	attrSeq     = 12 // NFULA_SEQ (be32, per group)

	cfgCmd     = 1 // NFULA_CFG_CMD
	cfgMode    = 2 // NFULA_CFG_MODE
	cfgNlBufSz = 3 // NFULA_CFG_NLBUFSIZ
	cfgTimeout = 4 // NFULA_CFG_TIMEOUT (1/100 s)
	cfgQThresh = 5 // NFULA_CFG_QTHRESH
	cfgFlags   = 6 // NFULA_CFG_FLAGS (be16)

	flagSeq = 0x0001 // NFULNL_CFG_F_SEQ

	cmdBind    = 1 // NFULNL_CFG_CMD_BIND
	copyPacket = 2 // NFULNL_COPY_PACKET
)

// Settings of the subscription (docs/shield-resolver.md, Refused traffic).
const (
	// CopyRange is how much of each packet the kernel copies: the IPv6
	// header, a few extension headers and a TCP header fit in it.
	CopyRange = 128
	// flushCentis and queueThreshold let the kernel batch up to 32
	// packets or 50 ms into one message, so a flood costs the reader one
	// system call per batch rather than per packet, while a single
	// attempt still arrives within 50 ms.
	flushCentis    = 5
	queueThreshold = 32
	// nlBufSize is the kernel's batch buffer.
	nlBufSize = 64 << 10
	// ReadBuffer is the socket's receive buffer: the bounded queue
	// between the kernel and the reader. When it is full the kernel drops
	// what does not fit and the next read reports ENOBUFS (Overrun).
	ReadBuffer = 256 << 10
)

// Entry is one logged packet: the rule's log prefix (without its ": "
// suffix) and the packet from its IP header on, at most CopyRange octets.
type Entry struct {
	Prefix  string
	Payload []byte
	// Seq is the group's sequence number of this message (HasSeq): the
	// kernel numbers every message it builds, also those it then drops
	// on a full receive buffer, so a gap is the exact count lost.
	Seq    uint32
	HasSeq bool
}

// ErrOverrun is returned by Receive when the kernel dropped log messages
// because the reader fell behind; receiving may continue.
var ErrOverrun = errors.New("nflog: messages dropped by the kernel (receive buffer full)")

// Conn is a subscription to one NFLOG group in the calling thread's network
// namespace.
type Conn struct {
	c *netlink.Conn
	// f and buf replace c for a subscription inherited from another
	// process (FromFile): mdlayher/netlink cannot adopt a descriptor.
	f   *os.File
	buf []byte
}

// File returns a duplicate of the subscription's socket, to hand to a
// child process (FromFile there): the group stays bound to the socket, so
// nothing logged in between is lost.
func (n *Conn) File() (*os.File, error) {
	rc, err := n.c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("nflog: socket: %w", err)
	}
	var dup int
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("nflog: socket: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("nflog: duplicate the socket: %w", derr)
	}
	return os.NewFile(uintptr(dup), "nflog"), nil
}

// FromFile adopts a subscription made by another process (File) and
// takes f over (it is closed). It must be a NETLINK_NETFILTER socket;
// which group it is bound to is the parent's business (it bound it
// through Listen).
func FromFile(f *os.File) (*Conn, error) {
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("nflog: inherited socket: %w", err)
	}
	var dup int
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			cerr = err
			return
		}
		proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL)
		if err != nil {
			cerr = err
			return
		}
		if dom != unix.AF_NETLINK || proto != unix.NETLINK_NETFILTER {
			cerr = fmt.Errorf("not a netfilter netlink socket (domain %d, protocol %d)", dom, proto)
			return
		}
		dup, cerr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, fmt.Errorf("nflog: inherited socket: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("nflog: inherited socket: %w", cerr)
	}
	// Non-blocking before os.NewFile, so that the runtime's poller waits
	// and Close ends a Receive in progress.
	if err := unix.SetNonblock(dup, true); err != nil {
		_ = unix.Close(dup)
		return nil, fmt.Errorf("nflog: inherited socket: %w", err)
	}
	return &Conn{f: os.NewFile(uintptr(dup), "nflog"), buf: make([]byte, 2*nlBufSize)}, nil
}

// Listen binds group in the current network namespace. It needs
// CAP_NET_ADMIN over that namespace and fails with EBUSY when another
// socket has bound the group there.
func Listen(group uint16) (*Conn, error) {
	c, err := nfnetlink.Dial("nflog", ReadBuffer, func(c *netlink.Conn) error { return configure(c, group) })
	if err != nil {
		return nil, err
	}
	return &Conn{c: c}, nil
}

func configure(c *netlink.Conn, group uint16) error {
	send := func(what string, attrs func(ae *netlink.AttributeEncoder)) error {
		m, err := nfnetlink.Message(unix.NFNL_SUBSYS_ULOG, msgConfig, group, netlink.Request|netlink.Acknowledge, attrs)
		if err != nil {
			return fmt.Errorf("nflog: %s: %w", what, err)
		}
		if _, err := c.Execute(m); err != nil {
			return fmt.Errorf("nflog: %s group %d: %w", what, group, err)
		}
		return nil
	}
	if err := send("bind", func(ae *netlink.AttributeEncoder) { ae.Bytes(cfgCmd, []byte{cmdBind}) }); err != nil {
		return err
	}
	return send("configure", func(ae *netlink.AttributeEncoder) {
		mode := make([]byte, 6) // struct nfulnl_msg_config_mode: be32 range, u8 mode, pad
		binary.BigEndian.PutUint32(mode, CopyRange)
		mode[4] = copyPacket
		ae.Bytes(cfgMode, mode)
		ae.Uint32(cfgNlBufSz, nlBufSize)
		ae.Uint32(cfgTimeout, flushCentis)
		ae.Uint32(cfgQThresh, queueThreshold)
		ae.Uint16(cfgFlags, flagSeq)
	})
}

// Receive waits for the next batch of logged packets and calls fn for
// each. It returns ErrOverrun when the kernel dropped messages (call it
// again), net.ErrClosed after Close, or another error for good.
func (n *Conn) Receive(fn func(Entry)) error {
	if n.f != nil {
		return n.receiveFile(fn)
	}
	msgs, err := n.c.Receive()
	if err != nil {
		if nfnetlink.Overrun(err) {
			return ErrOverrun
		}
		if nfnetlink.Closed(err) {
			return net.ErrClosed
		}
		return fmt.Errorf("nflog: receive: %w", err)
	}
	for _, m := range msgs {
		if e, ok := ParseMessage(uint16(m.Header.Type), m.Data); ok {
			fn(e)
		}
	}
	return nil
}

// receiveFile is Receive for an inherited socket: one datagram (a batch of
// up to nlBufSize octets, which the buffer holds twice over) per read.
func (n *Conn) receiveFile(fn func(Entry)) error {
	m, err := n.f.Read(n.buf)
	switch {
	case errors.Is(err, unix.ENOBUFS):
		return ErrOverrun
	case errors.Is(err, os.ErrClosed):
		return net.ErrClosed
	case err != nil:
		return fmt.Errorf("nflog: receive: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(n.buf[:m])
	if err != nil {
		return fmt.Errorf("nflog: receive: %w", err)
	}
	for _, msg := range msgs {
		if e, ok := ParseMessage(msg.Header.Type, msg.Data); ok {
			fn(e)
		}
	}
	return nil
}

// ParseMessage reads one NFLOG netlink message (its type and the data
// after the netlink header); ok is false for anything but a packet
// message with a payload.
func ParseMessage(typ uint16, data []byte) (Entry, bool) {
	if typ != unix.NFNL_SUBSYS_ULOG<<8|msgPacket || len(data) < 4 {
		return Entry{}, false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return Entry{}, false
	}
	var e Entry
	for ad.Next() {
		switch ad.Type() {
		case attrPrefix:
			e.Prefix = strings.TrimSuffix(strings.TrimRight(ad.String(), "\x00"), ": ")
		case attrPayload:
			e.Payload = ad.Bytes()
		case attrSeq:
			if b := ad.Bytes(); len(b) == 4 {
				e.Seq, e.HasSeq = binary.BigEndian.Uint32(b), true
			}
		}
	}
	if ad.Err() != nil || e.Payload == nil {
		return Entry{}, false
	}
	return e, true
}

// Close ends the subscription; a Receive in progress returns net.ErrClosed.
func (n *Conn) Close() error {
	if n.f != nil {
		return n.f.Close()
	}
	return n.c.Close()
}
