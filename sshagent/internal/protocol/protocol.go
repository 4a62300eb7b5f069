// Package protocol serves the SSH agent wire protocol (docs/ssh-agent.md, Design choices and why) for a
// restricted agent: strict framing (1..256 KiB), identities, signing and the
// session-bind@openssh.com extension (verified bindings kept per connection),
// FAILURE for everything else, and per-message deadlines.
//
// x/crypto's agent.ServeAgent is not used for the session loop because it
// accepts 16 MiB frames, answers the SSH1 "remove all" request with SUCCESS,
// logs through the global logger and needs a parsed public key for every sign
// request; here an untrusted key blob is only ever compared byte-wise.
package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/sshagent/internal/destination"
	"terok.dev/sandbox/sshagent/internal/restricted"
	"terok.dev/sandbox/sshagent/internal/sessionbind"
	"terok.dev/sandbox/sshagent/internal/wire"
)

// Message numbers (draft-miller-ssh-agent).
const (
	MsgFailure           = 5
	MsgRequestIdentities = 11
	MsgIdentitiesAnswer  = 12
	MsgSignRequest       = 13
	MsgSignResponse      = 14
	MsgSuccess           = 6
	MsgExtension         = sessionbind.MsgExtension
)

// MaxBinds bounds the session-bind records of one connection, as OpenSSH's
// agent does (AGENT_MAX_SESSION_IDS).
const MaxBinds = 16

// Session is the per-connection state: the verified session-bind records in
// the order they arrived (docs/ssh-agent.md, "Destination-bound keys").
type Session struct {
	Binds []sessionbind.Bind
}

// bind answers a session-bind@openssh.com extension: SUCCESS only for a
// binding whose host key signature verifies, FAILURE otherwise. A
// connection that already holds MaxBinds bindings, or whose last binding was
// not a forwarding hop (a bound session cannot be re-bound), is refused.
func (s *Session) bind(a *restricted.Agent, contents []byte) []byte {
	b, err := sessionbind.Parse(contents)
	if err != nil {
		a.Logger().Warn("session-bind refused", "err", err)
		return []byte{MsgFailure}
	}
	if n := len(s.Binds); n >= MaxBinds || (n > 0 && !s.Binds[n-1].Forwarding) {
		a.Logger().Warn("session-bind refused", "err", "connection already bound", "binds", n)
		return []byte{MsgFailure}
	}
	s.Binds = append(s.Binds, b)
	return []byte{MsgSuccess}
}

// Dest is where the connection's bindings say a signature goes: the host
// key of the last binding, and whether any binding was a forwarding hop.
func (s *Session) Dest() restricted.Dest {
	var d restricted.Dest
	for _, b := range s.Binds {
		d.Fingerprint = b.Fingerprint
		d.Forwarded = d.Forwarded || b.Forwarding
	}
	return d
}

// handle answers one message (type byte + payload) with the session's
// state and returns the reply body. It never fails: anything it cannot or
// may not do is FAILURE.
func (s *Session) handle(a *restricted.Agent, msg []byte) []byte {
	if len(msg) == 0 {
		return []byte{MsgFailure}
	}
	switch msg[0] {
	case MsgExtension:
		name, contents, err := sessionbind.ParseExtension(msg[1:])
		if err == nil && name == sessionbind.Name {
			return s.bind(a, contents)
		}
		return []byte{MsgFailure}
	case MsgSignRequest:
		return s.sign(a, msg[1:])
	}
	return Handle(a, msg)
}

// sign answers SIGN_REQUEST: every outcome is one audit record
// (docs/audit.md, Channel ssh).
func (s *Session) sign(a *restricted.Agent, p []byte) []byte {
	d := s.Dest()
	blob, data, flags, err := ParseSignRequest(p)
	if err != nil {
		a.Logger().Warn("malformed sign request answered with FAILURE", "len", len(p)+1)
		a.Refuse("malformed", nil, nil, nil, d)
		return []byte{MsgFailure}
	}
	k, ok := a.Lookup(blob)
	if !ok {
		a.Refused()
		a.Refuse("no-key", blob, nil, data, d)
		return []byte{MsgFailure}
	}
	if a.Expired(time.Now()) {
		// A session outliving its token's expiry signs no more.
		a.Logger().Warn("refused a signature: the session's token has expired; issue the task a new one", "key", k.Comment)
		a.Refuse("expired", blob, &k, data, d)
		return []byte{MsgFailure}
	}
	if a.Gone() {
		// Nor one whose task's container has ended.
		a.Logger().Warn("refused a signature: the session token's container has ended", "key", k.Comment)
		a.Refuse("task-gone", blob, &k, data, d)
		return []byte{MsgFailure}
	}
	if reason, why := destination.Check(k.Dest, s.Binds, k.Blob, data); reason != "" {
		a.Logger().Warn("refused a signature by a destination-bound key: "+why,
			"key", k.Comment, "reason", reason, "dest_fingerprint", d.Fingerprint)
		a.Refuse(reason, blob, &k, data, d)
		return []byte{MsgFailure}
	}
	sig, err := a.SignKey(k, data, agent.SignatureFlags(flags), d)
	if err != nil {
		return []byte{MsgFailure}
	}
	return wire.AppendString([]byte{MsgSignResponse}, ssh.Marshal(sig))
}

// MaxMessage is the largest accepted frame (type byte + payload).
const MaxMessage = 256 << 10

// ErrFrame is returned for a frame length of 0 or above the limit.
var ErrFrame = errors.New("agent frame length out of range")

// Conn is a connection with deadlines; net.Conn satisfies it.
type Conn interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Limits bound a session.
type Limits struct {
	MaxMessage  int           // frame limit, MaxMessage when 0
	Idle        time.Duration // wait for the next frame header; 0 = none
	BodyTimeout time.Duration // rest of a frame once its header arrived, and each reply write
}

func (l Limits) maxMessage() int {
	if l.MaxMessage <= 0 || l.MaxMessage > MaxMessage {
		return MaxMessage
	}
	return l.MaxMessage
}

// Serve runs the session until the peer closes, a frame is invalid or a
// deadline passes. A clean close by the peer between frames returns nil.
func Serve(c Conn, a *restricted.Agent, lim Limits) error {
	return ServeSession(c, a, lim, &Session{})
}

// ServeSession is Serve with the caller's per-connection state, which it
// fills as the session runs.
func ServeSession(c Conn, a *restricted.Agent, lim Limits, sess *Session) error {
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriterSize(c, 4096)
	for {
		if lim.Idle > 0 {
			if err := c.SetReadDeadline(time.Now().Add(lim.Idle)); err != nil {
				return err
			}
		}
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:1]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read frame: %w", err)
		}
		if lim.BodyTimeout > 0 {
			if err := c.SetReadDeadline(time.Now().Add(lim.BodyTimeout)); err != nil {
				return err
			}
		}
		if _, err := io.ReadFull(r, hdr[1:]); err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n == 0 || n > uint32(lim.maxMessage()) {
			return fmt.Errorf("%w: %d", ErrFrame, n)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return fmt.Errorf("read frame: %w", err)
		}
		reply := sess.handle(a, msg)
		if lim.BodyTimeout > 0 {
			if err := c.SetWriteDeadline(time.Now().Add(lim.BodyTimeout)); err != nil {
				return err
			}
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(len(reply)))
		w.Write(hdr[:])
		w.Write(reply)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write reply: %w", err)
		}
	}
}

// Handle answers one message (type byte + payload) of a connection without
// session state and returns the reply body. It never fails: anything it
// cannot or may not do is FAILURE.
func Handle(a *restricted.Agent, msg []byte) []byte {
	if len(msg) == 0 {
		return []byte{MsgFailure}
	}
	switch msg[0] {
	case MsgRequestIdentities:
		ids, _ := a.List()
		out := []byte{MsgIdentitiesAnswer}
		out = binary.BigEndian.AppendUint32(out, uint32(len(ids)))
		for _, k := range ids {
			out = wire.AppendString(out, k.Blob)
			out = wire.AppendString(out, []byte(k.Comment))
		}
		return out
	case MsgSignRequest, MsgExtension:
		var s Session
		return s.handle(a, msg)
	default:
		return []byte{MsgFailure}
	}
}

// ErrMalformed is returned for a truncated or overrunning sign request.
var ErrMalformed = errors.New("malformed sign request")

// ParseSignRequest splits a SIGN_REQUEST payload: string key_blob,
// string data, uint32 flags. Trailing bytes are tolerated (future fields).
func ParseSignRequest(p []byte) (blob, data []byte, flags uint32, err error) {
	blob, p, ok := wire.ReadString(p)
	if !ok {
		return nil, nil, 0, ErrMalformed
	}
	data, p, ok = wire.ReadString(p)
	if !ok {
		return nil, nil, 0, ErrMalformed
	}
	if len(p) < 4 {
		return nil, nil, 0, ErrMalformed
	}
	return blob, data, binary.BigEndian.Uint32(p), nil
}

var _ Conn = (net.Conn)(nil)
