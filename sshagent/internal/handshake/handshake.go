// Package handshake is the phantom-token preamble every agent connection
// starts with (docs/ssh-agent.md, Design choices and why): a big-endian uint32 length of 1..1024
// followed by that many token bytes, each part read within a deadline.
//
// Any violation is reported as an error and the caller closes the connection
// without replying, so a probing client learns nothing.
package handshake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// MaxTokenLen is the largest token length accepted.
const MaxTokenLen = 1024

// DefaultTimeout is the per-read deadline of the spec.
const DefaultTimeout = 5 * time.Second

// ErrLength is returned for a length of 0 or above MaxTokenLen.
var ErrLength = errors.New("handshake: token length out of range")

// ErrEncoding is returned for a token that is not valid UTF-8 or contains
// control characters; no real token does, and such bytes must never reach a log.
var ErrEncoding = errors.New("handshake: token is not printable UTF-8")

// Conn is what Read needs: a reader with read deadlines (net.Conn).
type Conn interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// Read reads one handshake from c, giving each of the two reads timeout
// (DefaultTimeout when zero), and clears the deadline afterwards.
func Read(c Conn, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var hdr [4]byte
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", fmt.Errorf("handshake: set deadline: %w", err)
	}
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", fmt.Errorf("handshake: read length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxTokenLen {
		return "", fmt.Errorf("%w: %d", ErrLength, n)
	}
	buf := make([]byte, n)
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", fmt.Errorf("handshake: set deadline: %w", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return "", fmt.Errorf("handshake: read token: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return "", fmt.Errorf("handshake: clear deadline: %w", err)
	}
	if !printable(buf) {
		return "", ErrEncoding
	}
	return string(buf), nil
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Encode returns the handshake bytes for token, for clients (the bridge).
func Encode(token string) ([]byte, error) {
	if len(token) == 0 || len(token) > MaxTokenLen {
		return nil, fmt.Errorf("%w: %d", ErrLength, len(token))
	}
	out := make([]byte, 4+len(token))
	binary.BigEndian.PutUint32(out, uint32(len(token)))
	copy(out[4:], token)
	return out, nil
}
