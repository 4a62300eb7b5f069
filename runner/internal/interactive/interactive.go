// Package interactive is the decider's end of interactive mode (docs/shield.md,
// Interactive decider protocol): `terok-sandbox shield interactive` attaches
// to the container resolver's socket, shows each held connection and sends
// the operator's answer; "always" is persisted with `shield allow` before it
// is answered, so the address is allowed for good before the connection
// passes.
package interactive

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"unicode"

	"terok.dev/sandbox/common/shieldbundle"
)

// Options of one session.
type Options struct {
	// JSON: held connections are printed as protocol lines and answers are
	// read as Decision lines (for scripts and tests); otherwise each is
	// asked about in turn with a prompt.
	JSON bool
	// Allow persists dst like `shield allow CONTAINER dst`.
	Allow func(ctx context.Context, dst string) error
	// Warn reports a problem that does not end the session.
	Warn func(string)
}

// Dial attaches to the decider socket in the container's shield state
// directory.
func Dial(stateDir string) (net.Conn, error) {
	path := filepath.Join(stateDir, shieldbundle.FileDeciderSocket)
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("attach to %s: %w (is the container running in interactive mode?)", path, err)
	}
	return c, nil
}

// Run serves the session on conn until in ends (detach: nil), ctx ends
// (nil) or the helper closes or refuses the connection (an error).
func Run(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer, o Options) error {
	helds := make(chan shieldbundle.Held)
	helperErr := make(chan error, 1)
	lines := make(chan string)
	inDone := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	// Closing conn ends the helper reader; the input reader ends at the
	// input's end (a terminal or pipe that never ends keeps it blocked
	// until the process exits: the input cannot be interrupted).
	defer conn.Close()
	go func() {
		r := bufio.NewReaderSize(conn, shieldbundle.MaxDeciderLine)
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("the container's resolver closed the decider connection (container stopped?)")
				}
				helperErr <- err
				return
			}
			h, err := shieldbundle.ParseHeld(line)
			if err != nil {
				helperErr <- err
				return
			}
			select {
			case helds <- h:
			case <-stop:
				return
			}
		}
	}()
	go func() {
		s := bufio.NewScanner(in)
		s.Buffer(make([]byte, shieldbundle.MaxDeciderLine), shieldbundle.MaxDeciderLine)
		for s.Scan() {
			select {
			case lines <- s.Text():
			case <-stop:
				return
			}
		}
		inDone <- s.Err()
	}()

	open := map[uint64]shieldbundle.Held{}
	var queue []uint64 // text mode: the questions in the order shown
	prompt := func() {
		if o.JSON || len(queue) == 0 {
			return
		}
		h := open[queue[0]]
		fmt.Fprintf(out, "held: %s (waits %d ms); allow [o]nce, [a]lways or [r]efuse? ", Describe(h), h.TimeoutMS)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-helperErr:
			return err
		case err := <-inDone:
			if err != nil {
				return fmt.Errorf("read answers: %w", err)
			}
			return nil
		case h := <-helds:
			open[h.ID] = h
			if o.JSON {
				b, err := shieldbundle.MarshalLine(h)
				if err != nil {
					return err
				}
				if _, err := out.Write(b); err != nil {
					return err
				}
				continue
			}
			queue = append(queue, h.ID)
			if len(queue) == 1 {
				prompt()
			}
		case line := <-lines:
			d, ok := parseAnswer(line, o.JSON, queue)
			if !ok {
				if o.JSON {
					o.Warn(fmt.Sprintf("ignored answer %q: want {\"id\":N,\"verdict\":\"once|always|refuse\"}", truncate(line)))
				} else {
					prompt()
				}
				continue
			}
			h, known := open[d.ID]
			if !known {
				o.Warn(fmt.Sprintf("no held connection %d (answered already?)", d.ID))
				continue
			}
			delete(open, d.ID)
			if !o.JSON {
				queue = queue[1:]
			}
			if d.Verdict == shieldbundle.VerdictAlways {
				if err := o.Allow(ctx, h.Dst); err != nil {
					o.Warn(fmt.Sprintf("allow %s failed, refusing the connection: %v", h.Dst, err))
					d.Verdict = shieldbundle.VerdictRefuse
				}
			}
			b, err := shieldbundle.MarshalLine(d)
			if err != nil {
				return err
			}
			if _, err := conn.Write(b); err != nil {
				return fmt.Errorf("send the answer: %w", err)
			}
			prompt()
		}
	}
}

// parseAnswer reads one input line: a Decision line in JSON mode, o/a/r
// (or once/always/refuse) for the first queued question otherwise.
func parseAnswer(line string, asJSON bool, queue []uint64) (shieldbundle.Decision, bool) {
	if asJSON {
		d, err := shieldbundle.ParseDecision([]byte(line))
		return d, err == nil
	}
	if len(queue) == 0 {
		return shieldbundle.Decision{}, false
	}
	v := ""
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "o", "once":
		v = shieldbundle.VerdictOnce
	case "a", "always":
		v = shieldbundle.VerdictAlways
	case "r", "refuse":
		v = shieldbundle.VerdictRefuse
	default:
		return shieldbundle.Decision{}, false
	}
	return shieldbundle.Decision{ID: queue[0], Verdict: v}, true
}

// Describe renders a held connection for a terminal: the name came from a
// DNS answer, so anything unprintable in it is shown as '?'.
func Describe(h shieldbundle.Held) string {
	dst := h.Dst
	if h.Port != 0 {
		if strings.Contains(dst, ":") {
			dst = "[" + dst + "]"
		}
		dst = fmt.Sprintf("%s:%d", dst, h.Port)
	}
	s := printable(h.Proto) + " " + dst
	if h.Name != "" {
		s += " (" + printable(h.Name) + ")"
	}
	return s
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
