package interactive

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/testkit"
)

// session runs Run against the helper's side of a unix socket pair the
// test speaks the protocol on.
type session struct {
	helper  net.Conn
	hr      *bufio.Reader
	inW     *io.PipeWriter
	out     *testkit.Buffer
	allowed chan string
	warns   chan string
	done    chan error
}

func newSession(t *testing.T, asJSON bool, allowErr error) *session {
	t.Helper()
	path := filepath.Join(t.TempDir(), shieldbundle.FileDeciderSocket)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := Dial(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	helper, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = helper.Close() })
	inR, inW := io.Pipe()
	s := &session{helper: helper, hr: bufio.NewReader(helper), inW: inW, out: &testkit.Buffer{},
		allowed: make(chan string, 8), warns: make(chan string, 8), done: make(chan error, 1)}
	o := Options{JSON: asJSON,
		Allow: func(_ context.Context, dst string) error { s.allowed <- dst; return allowErr },
		Warn:  func(m string) { s.warns <- m }}
	go func() { s.done <- Run(context.Background(), conn, inR, s.out, o) }()
	t.Cleanup(func() { _ = inW.Close(); _ = helper.Close(); <-s.done })
	return s
}

func (s *session) hold(t *testing.T, h shieldbundle.Held) {
	t.Helper()
	b, err := shieldbundle.MarshalLine(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.helper.Write(b); err != nil {
		t.Fatal(err)
	}
}

func (s *session) input(t *testing.T, line string) {
	t.Helper()
	if _, err := io.WriteString(s.inW, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (s *session) answer(t *testing.T) shieldbundle.Decision {
	t.Helper()
	_ = s.helper.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := s.hr.ReadBytes('\n')
	if err != nil {
		t.Fatal(err)
	}
	d, err := shieldbundle.ParseDecision(line)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitOut(t *testing.T, s *session, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.out.String(), want); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q lacks %q", s.out.String(), want)
		}
	}
}

var h1 = shieldbundle.Held{ID: 1, Proto: "tcp", Dst: "203.0.113.40", Port: 443, Name: "api.example.test", TimeoutMS: 30000}
var h2 = shieldbundle.Held{ID: 2, Proto: "udp", Dst: "2001:db8::40", Port: 4433, TimeoutMS: 30000}

func TestJSONSession(t *testing.T) {
	s := newSession(t, true, nil)
	s.hold(t, h1)
	s.hold(t, h2)
	waitOut(t, s, `"id":2`)
	lines := strings.Split(strings.TrimSpace(s.out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q", s.out.String())
	}
	if got, err := shieldbundle.ParseHeld([]byte(lines[0])); err != nil || got != h1 {
		t.Fatalf("first line %q: %+v, %v", lines[0], got, err)
	}
	// Answered out of order; "always" is persisted before the answer.
	s.input(t, `{"id":2,"verdict":"always"}`)
	if dst := <-s.allowed; dst != h2.Dst {
		t.Fatalf("allowed %s", dst)
	}
	if d := s.answer(t); d != (shieldbundle.Decision{ID: 2, Verdict: "always"}) {
		t.Fatalf("answer %+v", d)
	}
	s.input(t, `maybe`)
	if w := <-s.warns; !strings.Contains(w, "ignored answer") {
		t.Fatalf("warning %q", w)
	}
	s.input(t, `{"id":9,"verdict":"once"}`)
	if w := <-s.warns; !strings.Contains(w, "no held connection 9") {
		t.Fatalf("warning %q", w)
	}
	s.input(t, `{"id":1,"verdict":"refuse"}`)
	if d := s.answer(t); d != (shieldbundle.Decision{ID: 1, Verdict: "refuse"}) {
		t.Fatalf("answer %+v", d)
	}
	// The end of the input detaches: nil.
	_ = s.inW.Close()
	if err := <-s.done; err != nil {
		t.Fatalf("detach: %v", err)
	}
	s.done <- nil
}

func TestAlwaysFailsRefuses(t *testing.T) {
	s := newSession(t, true, errors.New("nft failed"))
	s.hold(t, h1)
	waitOut(t, s, `"id":1`)
	s.input(t, `{"id":1,"verdict":"always"}`)
	<-s.allowed
	if d := s.answer(t); d.Verdict != shieldbundle.VerdictRefuse {
		t.Fatalf("answer %+v after a failed allow", d)
	}
	if w := <-s.warns; !strings.Contains(w, "nft failed") {
		t.Fatalf("warning %q", w)
	}
}

func TestTextSession(t *testing.T) {
	s := newSession(t, false, nil)
	evil := h1
	evil.Name = "evil\x1b[2J.test"
	s.hold(t, evil)
	s.hold(t, h2)
	waitOut(t, s, "held: tcp 203.0.113.40:443 (evil?[2J.test) (waits 30000 ms); allow [o]nce, [a]lways or [r]efuse? ")
	if strings.Contains(s.out.String(), "2001:db8") {
		t.Fatal("second question shown before the first was answered")
	}
	s.input(t, "what")
	s.input(t, "o")
	if d := s.answer(t); d != (shieldbundle.Decision{ID: 1, Verdict: "once"}) {
		t.Fatalf("answer %+v", d)
	}
	waitOut(t, s, "held: udp [2001:db8::40]:4433 (waits")
	s.input(t, "always")
	if dst := <-s.allowed; dst != h2.Dst {
		t.Fatalf("allowed %s", dst)
	}
	if d := s.answer(t); d != (shieldbundle.Decision{ID: 2, Verdict: "always"}) {
		t.Fatalf("answer %+v", d)
	}
}

func TestHelperEnds(t *testing.T) {
	s := newSession(t, true, nil)
	b, _ := shieldbundle.MarshalLine(shieldbundle.DeciderError{Error: "another decider is attached"})
	if _, err := s.helper.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := <-s.done; err == nil || !strings.Contains(err.Error(), "another decider") {
		t.Fatalf("Run = %v", err)
	}
	s.done <- nil

	s = newSession(t, true, nil)
	_ = s.helper.Close()
	if err := <-s.done; err == nil || !strings.Contains(err.Error(), "closed the decider connection") {
		t.Fatalf("Run = %v", err)
	}
	s.done <- nil
}

func TestDialMissing(t *testing.T) {
	if _, err := Dial(t.TempDir()); err == nil || !strings.Contains(err.Error(), "interactive mode") {
		t.Fatalf("Dial = %v", err)
	}
}

// TestExpiredQuestions: a question the helper has refused by its timeout
// is dropped from the text queue (said on the output) and no longer asked,
// so a flood of held destinations leaves no backlog of dead questions in
// front of a live one; an answer that comes too late is not sent (and
// "always" allows nothing).
func TestExpiredQuestions(t *testing.T) {
	s := newSession(t, false, nil)
	for i := uint64(1); i <= 20; i++ {
		s.hold(t, shieldbundle.Held{ID: i, Proto: "udp", Dst: "198.51.100.9", Port: uint16(20000 + i), TimeoutMS: 1})
	}
	live := shieldbundle.Held{ID: 21, Proto: "tcp", Dst: "203.0.113.40", Port: 443, Name: "api.example.test", TimeoutMS: 60000}
	s.hold(t, live)
	waitOut(t, s, "held: tcp 203.0.113.40:443 (api.example.test)")
	if n := strings.Count(s.out.String(), "expired: udp 198.51.100.9:"); n != 20 {
		t.Fatalf("%d expired questions said, want 20:\n%s", n, s.out.String())
	}
	// The live question is the one asked now: nothing after its prompt.
	if out := s.out.String(); !strings.HasSuffix(out, "allow [o]nce, [a]lways or [r]efuse? ") ||
		!strings.Contains(out[strings.LastIndex(out, "held: "):], "203.0.113.40:443") {
		t.Fatalf("the live question is not the one asked:\n%s", out)
	}
	s.input(t, "o")
	if d := s.answer(t); d != (shieldbundle.Decision{ID: 21, Verdict: "once"}) {
		t.Fatalf("answer %+v, want the live question's", d)
	}

	// JSON mode: a late answer is not sent and allows nothing.
	j := newSession(t, true, nil)
	j.hold(t, shieldbundle.Held{ID: 5, Proto: "tcp", Dst: "198.51.100.9", Port: 22, TimeoutMS: 1})
	waitOut(t, j, `"id":5`)
	time.Sleep(5 * time.Millisecond) // past its 1 ms
	j.input(t, `{"id":5,"verdict":"always"}`)
	if w := <-j.warns; !strings.Contains(w, "expired") {
		t.Fatalf("warning %q", w)
	}
	select {
	case dst := <-j.allowed:
		t.Fatalf("a late always allowed %s", dst)
	default:
	}
	j.hold(t, live)
	waitOut(t, j, `"id":21`)
	j.input(t, `{"id":21,"verdict":"refuse"}`)
	if d := j.answer(t); d.ID != 21 {
		t.Fatalf("answer %+v: the late one was sent", d)
	}
}
