// Package wire holds the SSH "string" encoding (a uint32 big-endian length,
// then that many bytes) shared by the agent protocol and the session-bind
// parser: one reader that never reads past its input, one writer.
package wire

import "encoding/binary"

// ReadString splits one SSH string off p. ok is false when p is too short
// for the length prefix or for the length it announces.
func ReadString(p []byte) (s, rest []byte, ok bool) {
	if len(p) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return nil, nil, false
	}
	return p[4 : 4+n], p[4+n:], true
}

// AppendString appends s to b as an SSH string.
func AppendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
