// Package pushcmd reads the command list at the head of a git receive-pack
// request (docs/gate.md, Push commands): optional "shallow" lines, then one
// "old new ref" line per ref update (the first with a NUL and the client's
// capabilities), then a flush packet. It reads exactly up to that flush, so
// the push options and the pack that follow stay in the reader for git.
//
// The input is untrusted: every length, count and character is bounded or
// checked, and anything unexpected is an *Error (the gate answers 400).
package pushcmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"terok.dev/sandbox/common/gatepolicy"
	"terok.dev/sandbox/gate/internal/pktline"
)

// Limits bound what Read accepts. Zero values take the defaults.
type Limits struct {
	MaxCommands int // ref updates in one push; default 4096
	MaxShallow  int // shallow lines; default 4096
	MaxBytes    int // bytes of the whole command list; default 2 MiB
}

// Default limits.
const (
	DefaultMaxCommands = 4096
	DefaultMaxShallow  = 4096
	DefaultMaxBytes    = 2 << 20
	// MaxPktLen is git's largest pkt-line, header included (LARGE_PACKET_MAX).
	MaxPktLen = 65520
)

// Command is one requested ref update. Old or New is the zero id for a
// creation or a deletion.
type Command struct {
	Old, New, Ref string
}

// Create reports whether the command creates the ref.
func (c Command) Create() bool { return isZero(c.Old) }

// Delete reports whether the command deletes the ref.
func (c Command) Delete() bool { return isZero(c.New) }

// Request is the parsed command list.
type Request struct {
	Shallow  []string
	Commands []Command
	Caps     []string
	// Raw is every byte Read consumed, the flush included.
	Raw []byte
}

// HasCap reports whether the client asked for capability name (a
// "name=value" capability matches by its name).
func (r *Request) HasCap(name string) bool {
	for _, c := range r.Caps {
		if c == name || strings.HasPrefix(c, name+"=") {
			return true
		}
	}
	return false
}

// Error is a malformed or over-limit command list.
type Error struct{ Msg string }

func (e *Error) Error() string { return "push command list: " + e.Msg }

func bad(format string, a ...any) error { return &Error{Msg: fmt.Sprintf(format, a...)} }

// Read parses the command list from r, reading nothing past its flush. An
// empty body (io.EOF before any byte) is an *Error; a flush alone is an
// empty list (git then updates nothing and reads no pack).
func Read(r io.Reader, lim Limits) (*Request, error) {
	if lim.MaxCommands <= 0 {
		lim.MaxCommands = DefaultMaxCommands
	}
	if lim.MaxShallow <= 0 {
		lim.MaxShallow = DefaultMaxShallow
	}
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	req := &Request{}
	var raw bytes.Buffer
	var hdr [4]byte
	buf := make([]byte, MaxPktLen)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, readErr(err, raw.Len())
		}
		n, ok := pktline.Len(hdr[:])
		if !ok {
			return nil, bad("bad pkt-line length %q at byte %d", hdr[:], raw.Len())
		}
		raw.Write(hdr[:])
		if n == 0 {
			break
		}
		if n < 5 || n > MaxPktLen {
			return nil, bad("pkt-line length %d at byte %d out of range (5-%d)", n, raw.Len()-4, MaxPktLen)
		}
		if raw.Len()+n-4 > lim.MaxBytes {
			return nil, bad("command list longer than %d bytes", lim.MaxBytes)
		}
		line := buf[:n-4]
		if _, err := io.ReadFull(r, line); err != nil {
			return nil, readErr(err, raw.Len())
		}
		raw.Write(line)
		if err := req.addLine(line, lim); err != nil {
			return nil, err
		}
	}
	if len(req.Commands) == 0 && len(req.Shallow) > 0 {
		return nil, bad("shallow lines without a ref update")
	}
	req.Raw = raw.Bytes()
	return req, nil
}

func readErr(err error, at int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return bad("body ended at byte %d inside the command list", at)
	}
	var pe *Error
	if errors.As(err, &pe) {
		return err
	}
	// A transport error (body limit, idle timeout) keeps its own type.
	return fmt.Errorf("push command list: %w", err)
}

func (req *Request) addLine(line []byte, lim Limits) error {
	s := string(bytes.TrimSuffix(line, []byte("\n")))
	if rest, ok := strings.CutPrefix(s, "shallow "); ok {
		if len(req.Commands) > 0 {
			return bad("shallow line after a command")
		}
		if !isHexID(rest) {
			return bad("bad object id in shallow line")
		}
		if len(req.Shallow) >= lim.MaxShallow {
			return bad("more than %d shallow lines", lim.MaxShallow)
		}
		req.Shallow = append(req.Shallow, rest)
		return nil
	}
	if strings.HasPrefix(s, "push-cert") {
		return bad("signed pushes (push-cert) are not supported by the gate")
	}
	if len(req.Commands) >= lim.MaxCommands {
		return bad("more than %d ref updates in one push", lim.MaxCommands)
	}
	first := len(req.Commands) == 0
	if i := strings.IndexByte(s, 0); i >= 0 {
		if !first {
			return bad("capabilities after the first command")
		}
		caps := s[i+1:]
		s = s[:i]
		for _, c := range strings.Fields(caps) {
			if !printable(c) {
				return bad("unprintable capability")
			}
			req.Caps = append(req.Caps, c)
		}
	}
	parts := strings.SplitN(s, " ", 3)
	if len(parts) != 3 {
		return bad("command %d is not \"old new ref\"", len(req.Commands)+1)
	}
	old, nw, ref := parts[0], parts[1], parts[2]
	if !isHexID(old) || !isHexID(nw) || len(old) != len(nw) {
		return bad("command %d: bad object id", len(req.Commands)+1)
	}
	if isZero(old) && isZero(nw) {
		return bad("command %d: old and new are both the zero id", len(req.Commands)+1)
	}
	if err := CheckRefName(ref); err != nil {
		return bad("command %d: %v", len(req.Commands)+1, err)
	}
	for _, c := range req.Commands {
		if c.Ref == ref {
			return bad("ref %s updated twice", ref)
		}
	}
	req.Commands = append(req.Commands, Command{Old: old, New: nw, Ref: ref})
	return nil
}

// isHexID accepts a SHA-1 (40) or SHA-256 (64) object id in lower-case hex.
func isHexID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isZero(id string) bool { return strings.Trim(id, "0") == "" }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CheckRefName applies git's ref-name rules (common/gatepolicy).
func CheckRefName(ref string) error { return gatepolicy.CheckRefName(ref) }

// Encode writes the command list again with caps as the capabilities of the
// first command (the gate adds "atomic", docs/gate.md, Push commands).
func (r *Request) Encode(caps []string) []byte {
	var b bytes.Buffer
	for _, s := range r.Shallow {
		writePkt(&b, "shallow "+s+"\n")
	}
	for i, c := range r.Commands {
		line := c.Old + " " + c.New + " " + c.Ref
		if i == 0 {
			line += "\x00" + strings.Join(caps, " ")
		}
		writePkt(&b, line+"\n")
	}
	b.WriteString("0000")
	return b.Bytes()
}

func writePkt(b *bytes.Buffer, s string) {
	fmt.Fprintf(b, "%04x", len(s)+4)
	b.WriteString(s)
}
