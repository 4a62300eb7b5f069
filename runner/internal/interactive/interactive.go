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
	"time"
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
	// expires is when the helper refuses each open question on its own
	// (its TimeoutMS from arrival): past it an answer would be ignored, so
	// the question is dropped rather than asked, and a task that floods
	// the queue with destinations cannot leave the operator a backlog of
	// dead questions burying the live one.
	expires := map[uint64]time.Time{}
	var queue []uint64 // text mode: the questions in the order shown
	// headTimer fires when the question at the head of the queue expires.
	headTimer := time.NewTimer(time.Hour)
	headTimer.Stop()
	defer headTimer.Stop()
	forget := func(id uint64) {
		delete(open, id)
		delete(expires, id)
	}
	// expire drops the questions whose time is up: from the text queue's
	// head (said on the output), and any in JSON mode.
	expire := func() {
		now := time.Now()
		if o.JSON {
			for id, at := range expires {
				if !now.Before(at) {
					forget(id)
				}
			}
			return
		}
		for len(queue) > 0 && !now.Before(expires[queue[0]]) {
			fmt.Fprintf(out, "\nexpired: %s (refused by the shield after %d ms)\n", Describe(open[queue[0]]), open[queue[0]].TimeoutMS)
			forget(queue[0])
			queue = queue[1:]
		}
		// Behind the head the order of arrival is the order of
		// expiry, give or take: those are dropped when they come up.
	}
	prompt := func() {
		expire()
		if o.JSON || len(queue) == 0 {
			return
		}
		h := open[queue[0]]
		headTimer.Reset(time.Until(expires[queue[0]]))
		fmt.Fprintf(out, "held: %s (waits %d ms); allow [o]nce, [a]lways or [r]efuse? ", Describe(h), h.TimeoutMS)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-headTimer.C:
			if len(queue) > 0 && !time.Now().Before(expires[queue[0]]) {
				prompt()
			}
		case err := <-helperErr:
			return err
		case err := <-inDone:
			if err != nil {
				return fmt.Errorf("read answers: %w", err)
			}
			return nil
		case h := <-helds:
			if o.JSON {
				expire()
			}
			open[h.ID] = h
			expires[h.ID] = time.Now().Add(time.Duration(h.TimeoutMS) * time.Millisecond)
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
				o.Warn(fmt.Sprintf("no held connection %d (answered already, or expired?)", d.ID))
				continue
			}
			late := !time.Now().Before(expires[d.ID])
			forget(d.ID)
			if !o.JSON {
				queue = queue[1:]
			}
			if late {
				// The helper has refused it already: an answer now would
				// be ignored, and "always" would allow an address for a
				// connection that never passed.
				o.Warn(fmt.Sprintf("held connection %d (%s) expired before the answer: the shield refused it", d.ID, Describe(h)))
				prompt()
				continue
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
