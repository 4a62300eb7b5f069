package nftnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// recorder is an nftables connection that only records: its batch
// returns what google/nftables would have sent at Flush (the messages
// between and including the batch begin and end), sending nothing. The
// recording answers nothing (io.EOF: no reply), which google/nftables'
// Flush takes as one empty answer per message, without an error.
func recorder() (*nftables.Conn, func() ([]netlink.Message, error)) {
	var got []netlink.Message
	rec, _ := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if got == nil && req != nil {
			got = append([]netlink.Message(nil), req...)
		}
		return nil, io.EOF
	}))
	return rec, func() ([]netlink.Message, error) {
		if err := rec.Flush(); err != nil {
			return nil, err
		}
		if got == nil {
			return nil, errors.New("no batch recorded")
		}
		return got, nil
	}
}

// sendBatch sends the batch msgs (from a recorder) as one netlink write
// on c's socket and reads the kernel's answer. google/nftables' Flush asks
// for an acknowledgement of every message and an echo of every rule, and
// reads each of them with its own receive (one goroutine, poller wake-up
// and syscall each: ~100 for the dev-standard table, and the kernel
// builds each echo); here only the first message of the batch asks for an
// acknowledgement, echoes are off, and every answer is read at once.
//
// Why that proves the outcome: nfnetlink processes a batch in the sender's
// sendmsg (validation, commit or abort, then the queued answers), so when
// the write returns every answer is in the socket's queue. On success
// that is the one acknowledgement; a message the kernel refused answers
// with its error whether or not it asked for an acknowledgement, and a
// failed commit with an error for the batch. So: the batch committed if
// and only if the queue holds the acknowledgement and no error. Anything
// else (no acknowledgement, an error, an unreadable answer) fails, and the
// read-back (Verify) checks what the kernel holds either way.
func (c *Conn) sendBatch(msgs []netlink.Message) error {
	if len(msgs) < 3 {
		return fmt.Errorf("batch of %d messages", len(msgs))
	}
	var buf []byte
	ackSeq := msgs[1].Header.Sequence
	for i, m := range msgs {
		m.Header.PID = 0
		m.Header.Flags &^= netlink.Acknowledge | unix.NLM_F_ECHO
		if i == 1 {
			m.Header.Flags |= netlink.Acknowledge
		}
		b, err := m.MarshalBinary()
		if err != nil {
			return fmt.Errorf("marshal message %d: %w", i, err)
		}
		buf = append(buf, b...)
	}
	var serr error
	if err := c.raw.Control(func(fd uintptr) {
		// Acknowledgements and errors without a copy of the request: a
		// refused element message would not fit the receive buffer.
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1); serr != nil {
			return
		}
		defer func() { _ = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 0) }()
		if serr = unix.Sendto(int(fd), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); serr != nil {
			serr = fmt.Errorf("send: %w", serr)
			return
		}
		serr = readAnswers(int(fd), ackSeq)
	}); err != nil {
		return err
	}
	return serr
}

// readAnswers reads everything queued on the socket without waiting and
// returns nil only if it holds the acknowledgement of sequence ackSeq and
// no error.
func readAnswers(fd int, ackSeq uint32) error {
	rb := make([]byte, 32<<10)
	acked := false
	var errs []error
	for {
		n, _, err := unix.Recvfrom(fd, rb, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		ms, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		for _, m := range ms {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue // not asked for (no echo): ignored
			}
			if len(m.Data) < 4 {
				return errors.New("answer: short error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errs = append(errs, fmt.Errorf("message %d: %w", m.Header.Seq, syscall.Errno(-code)))
			} else if m.Header.Seq == ackSeq {
				acked = true
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if !acked {
		return errors.New("no acknowledgement of the batch")
	}
	return nil
}
