// Package gitop tells which git operation an upload-pack request is, for
// the gate's audit records (docs/audit.md, Channel gate): a protocol v2
// ls-refs, or a fetch that names objects the client has (fetch) or none
// (clone). It reads the request body as it streams to git (an io.Writer
// fed by a tee), keeps a few bytes of each pkt-line and never buffers the
// body. The body is untrusted: anything that is not a pkt-line stream just
// stops the scan.
package gitop

import "terok.dev/sandbox/gate/internal/pktline"

// Events.
const (
	LsRefs = "ls-refs"
	Clone  = "clone"
	Fetch  = "fetch"
)

const keep = 16 // bytes of each pkt-line the scan looks at

// Scanner classifies an upload-pack request body written to it.
type Scanner struct {
	hdr    [4]byte
	nhdr   int
	left   int // payload bytes still to come of the current pkt-line
	line   [keep]byte
	nline  int
	broken bool

	command string // v2 "command=" value; "" for protocol v0
	wants   int
	haves   int
	done    bool
}

// Write scans p; it never fails, so it can sit behind an io.TeeReader.
func (s *Scanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && !s.broken {
		if s.left == 0 {
			c := copy(s.hdr[s.nhdr:], p)
			s.nhdr += c
			p = p[c:]
			if s.nhdr < 4 {
				break
			}
			s.nhdr = 0
			l, ok := pktline.Len(s.hdr[:])
			switch {
			case !ok:
				s.broken = true
			case l < 4: // flush, delim, response-end
			case l == 4:
				s.broken = true
			default:
				s.left, s.nline = l-4, 0
			}
			continue
		}
		c := min(s.left, len(p))
		if room := keep - s.nline; room > 0 {
			s.nline += copy(s.line[s.nline:], p[:min(c, room)])
		}
		s.left -= c
		p = p[c:]
		if s.left == 0 {
			s.endLine(string(s.line[:s.nline]))
		}
	}
	return n, nil
}

func (s *Scanner) endLine(l string) {
	switch {
	case len(l) >= 8 && l[:8] == "command=":
		if s.command == "" {
			s.command = trimNL(l[8:])
		}
	case len(l) >= 5 && l[:5] == "want ":
		s.wants++
	case len(l) >= 5 && l[:5] == "have ":
		s.haves++
	case trimNL(l) == "done":
		s.done = true
	}
}

func trimNL(s string) string {
	if len(s) > 0 && s[len(s)-1] == '\n' {
		return s[:len(s)-1]
	}
	return s
}

// Event is the operation seen so far: ls-refs, clone (wants and no have),
// or fetch (haves, or anything else).
func (s *Scanner) Event() string {
	switch {
	case s.command == "ls-refs":
		return LsRefs
	case (s.command == "" || s.command == "fetch") && s.wants > 0 && s.haves == 0:
		return Clone
	}
	return Fetch
}

// Haves is the number of "have" lines seen; Done whether the client sent
// "done" (the last round of a negotiation).
func (s *Scanner) Haves() int { return s.haves }
func (s *Scanner) Done() bool { return s.done }
