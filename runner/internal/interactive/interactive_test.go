package interactive

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// session runs Run against the helper's side of a unix socket pair the
// test speaks the protocol on.
type session struct {
	helper  net.Conn
	hr      *bufio.Reader
	inW     *io.PipeWriter
	out     *syncBuf
	allowed chan string
	warns   chan string
	done    chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
	s := &session{helper: helper, hr: bufio.NewReader(helper), inW: inW, out: &syncBuf{},
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
