package nfnetlink

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func TestMessage(t *testing.T) {
	m, err := Message(unix.NFNL_SUBSYS_QUEUE, 2, 0x0102, netlink.Request|netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(3, 64)
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_QUEUE<<8|2) || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Errorf("header %+v", m.Header)
	}
	// nfgenmsg (AF_UNSPEC, v0, res 0x0102 big-endian), then one attribute:
	// length 8, type 3, value 64 big-endian.
	want := []byte{unix.AF_UNSPEC, 0, 1, 2, 8, 0, 3, 0, 0, 0, 0, 64}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("data % x, want % x", m.Data, want)
	}
}

func TestReceiveErrors(t *testing.T) {
	for _, c := range []struct {
		err             error
		overrun, closed bool
	}{
		{unix.ENOBUFS, true, false},
		{&netlink.OpError{Op: "receive", Err: unix.ENOBUFS}, true, false},
		{fmt.Errorf("x: %w", net.ErrClosed), false, true},
		{unix.EBADF, false, true},
		{errors.New("read netlink: use of closed file"), false, true},
		{unix.EPERM, false, false},
	} {
		if got := Overrun(c.err); got != c.overrun {
			t.Errorf("Overrun(%v) = %v", c.err, got)
		}
		if got := Closed(c.err); got != c.closed {
			t.Errorf("Closed(%v) = %v", c.err, got)
		}
	}
}
