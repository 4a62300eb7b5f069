// Package nfnetlink is what the NFLOG and NFQUEUE clients (internal/nflog,
// internal/nfqueue) share of the netfilter netlink protocol
// (linux/netfilter/nfnetlink.h): the NETLINK_NETFILTER socket set up with
// its receive buffer, the message with its nfgenmsg header and big-endian
// attributes, and what a failed receive means (docs/shield-resolver.md,
// Refused traffic and Interactive approval).
package nfnetlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// version0 is NFNETLINK_V0, the nfgenmsg version.
const version0 = 0

// Dial opens a NETLINK_NETFILTER socket in the calling thread's network
// namespace, runs setup on it (bind and configure a group or queue) and
// sets its receive buffer to readBuffer octets. On any error the socket is
// closed again; errors start with client ("nflog", "nfqueue").
func Dial(client string, readBuffer int, setup func(*netlink.Conn) error) (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: netlink socket: %w", client, err)
	}
	if err := setup(c); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.SetReadBuffer(readBuffer); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: receive buffer: %w", client, err)
	}
	return c, nil
}

// Message is a message of netfilter subsystem subsys (unix.NFNL_SUBSYS_*)
// and type typ for resource res (an NFLOG group, an NFQUEUE queue): the
// nfgenmsg header (AF_UNSPEC, version 0, res big-endian), then the
// attributes attrs encodes, big-endian as netfilter wants them.
func Message(subsys, typ int, res uint16, flags netlink.HeaderFlags, attrs func(*netlink.AttributeEncoder)) (netlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		return netlink.Message{}, err
	}
	hdr := []byte{unix.AF_UNSPEC, version0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], res)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(subsys<<8 | typ), Flags: flags},
		Data:   append(hdr, b...),
	}, nil
}

// Overrun reports whether err, from a receive, says the kernel dropped
// messages for a full receive buffer (ENOBUFS); receiving may continue.
func Overrun(err error) bool {
	var op *netlink.OpError
	return errors.Is(err, unix.ENOBUFS) || errors.As(err, &op) && errors.Is(op.Err, unix.ENOBUFS)
}

// Closed reports whether err, from a receive, says the socket was closed.
func Closed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADF) || strings.Contains(err.Error(), "use of closed")
}
