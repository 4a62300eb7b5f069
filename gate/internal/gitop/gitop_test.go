package gitop

import (
	"fmt"
	"strings"
	"testing"
)

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

const id = "1111111111111111111111111111111111111111"

func TestEvent(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		done             bool
	}{
		{"v2 ls-refs", pkt("command=ls-refs\n") + pkt("agent=git/2\n") + "0001" + pkt("peel\n") + pkt("ref-prefix HEAD\n") + "0000", LsRefs, false},
		{"v2 clone", pkt("command=fetch\n") + "0001" + pkt("thin-pack\n") + pkt("want "+id+"\n") + pkt("done\n") + "0000", Clone, true},
		{"v2 fetch", pkt("command=fetch\n") + "0001" + pkt("want "+id+"\n") + pkt("have "+id+"\n") + pkt("done\n") + "0000", Fetch, true},
		{"v0 clone", pkt("want "+id+" multi_ack side-band-64k\n") + "0000" + pkt("done\n"), Clone, true},
		{"v0 fetch", pkt("want "+id+"\n") + "0000" + pkt("have "+id+"\n") + "0000", Fetch, false},
		{"empty", "", Fetch, false},
		{"garbage", "GET / HTTP/1.1\r\n", Fetch, false},
		{"broken after want", pkt("want "+id+"\n") + "zzzz" + pkt("have "+id+"\n"), Clone, false},
		{"v2 other command", pkt("command=object-info\n") + "0000", Fetch, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Byte by byte and in one piece give the same answer.
			for _, step := range []int{1, 3, len(tc.body) + 1} {
				var s Scanner
				for b := tc.body; len(b) > 0; {
					n := min(step, len(b))
					if w, err := s.Write([]byte(b[:n])); w != n || err != nil {
						t.Fatalf("Write = %d, %v", w, err)
					}
					b = b[n:]
				}
				if got := s.Event(); got != tc.want || s.Done() != tc.done {
					t.Fatalf("step %d: Event %q done %v, want %q %v", step, got, s.Done(), tc.want, tc.done)
				}
			}
		})
	}
}

// A long pkt-line is scanned past without being kept.
func TestLongLine(t *testing.T) {
	var s Scanner
	s.Write([]byte(pkt("want " + id + " " + strings.Repeat("x", 60000) + "\n")))
	s.Write([]byte(pkt("have " + id + "\n")))
	if s.Event() != Fetch || s.Haves() != 1 {
		t.Fatalf("Event %q haves %d", s.Event(), s.Haves())
	}
}

func FuzzScanner(f *testing.F) {
	f.Add([]byte(pkt("command=fetch\n")+"0001"+pkt("want "+id+"\n")+pkt("done\n")+"0000"), 3)
	f.Add([]byte("0004zzzz"), 1)
	f.Fuzz(func(t *testing.T, b []byte, step int) {
		if step <= 0 || step > 1<<16 {
			step = 1
		}
		var whole, split Scanner
		whole.Write(b)
		for p := b; len(p) > 0; {
			n := min(step, len(p))
			split.Write(p[:n])
			p = p[n:]
		}
		if whole.Event() != split.Event() || whole.Haves() != split.Haves() || whole.Done() != split.Done() {
			t.Fatalf("split writes change the answer: %q vs %q", whole.Event(), split.Event())
		}
	})
}
