package decider

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/decidertest"
)

func newServer(t *testing.T, timeout time.Duration, uid int) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), shieldbundle.FileDeciderSocket)
	s, err := listen(path, timeout, uid, func(slog.Level, string, ...slog.Attr) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// attach connects a decider (decidertest.Client) and waits until the
// server holds its session (attaching is asynchronous).
func attach(t *testing.T, s *Server, path string) *decidertest.Client {
	t.Helper()
	c := decidertest.Dial(t, path)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		ok := s.cur != nil
		s.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("decider not attached")
		}
		time.Sleep(time.Millisecond)
	}
	return c
}

var held = shieldbundle.Held{Proto: "tcp", Dst: "198.51.100.20", Port: 443, Name: "example.test"}

// ask runs Ask in the background.
func ask(s *Server) <-chan Answer {
	ch := make(chan Answer, 1)
	go func() { ch <- s.Ask(context.Background(), held) }()
	return ch
}

func TestAnswers(t *testing.T) {
	for _, v := range []string{shieldbundle.VerdictOnce, shieldbundle.VerdictAlways, shieldbundle.VerdictRefuse} {
		t.Run(v, func(t *testing.T) {
			s, path := newServer(t, 5*time.Second, os.Geteuid())
			c := attach(t, s, path)
			got := ask(s)
			q := c.Question(t)
			if q.Dst != held.Dst || q.Port != held.Port || q.Name != held.Name || q.Proto != "tcp" || q.TimeoutMS != 5000 || q.ID == 0 {
				t.Fatalf("question %+v", q)
			}
			c.Answer(t, q.ID, v)
			if a := <-got; a != (Answer{v, ReasonDecided}) {
				t.Fatalf("answer %+v, want %s decided", a, v)
			}
		})
	}
}

func TestSocketMode(t *testing.T) {
	_, path := newServer(t, time.Second, os.Geteuid())
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0600 socket", st.Mode())
	}
}

func TestRefusals(t *testing.T) {
	t.Run("no decider", func(t *testing.T) {
		s, _ := newServer(t, time.Second, os.Geteuid())
		if a := s.Ask(context.Background(), held); a != (Answer{shieldbundle.VerdictRefuse, ReasonNoDecider}) {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s, path := newServer(t, 200*time.Millisecond, os.Geteuid())
		c := attach(t, s, path)
		got := ask(s)
		q := c.Question(t)
		if a := <-got; a != (Answer{shieldbundle.VerdictRefuse, ReasonTimeout}) {
			t.Fatalf("%+v", a)
		}
		// A late answer is for a question no longer open: ignored, and the
		// decider stays attached for the next one.
		c.Answer(t, q.ID, shieldbundle.VerdictOnce)
		got = ask(s)
		c.Answer(t, c.Question(t).ID, shieldbundle.VerdictOnce)
		if a := <-got; a.Reason != ReasonDecided {
			t.Fatalf("after a late answer: %+v", a)
		}
	})
	t.Run("decider gone", func(t *testing.T) {
		s, path := newServer(t, time.Minute, os.Geteuid())
		c := attach(t, s, path)
		got := ask(s)
		c.Question(t)
		_ = c.Conn.Close()
		select {
		case a := <-got:
			if a != (Answer{shieldbundle.VerdictRefuse, ReasonGone}) {
				t.Fatalf("%+v", a)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("question still open after its decider went away")
		}
	})
	t.Run("bad line detaches", func(t *testing.T) {
		s, path := newServer(t, time.Minute, os.Geteuid())
		c := attach(t, s, path)
		got := ask(s)
		c.Question(t)
		if _, err := c.Conn.Write([]byte(`{"id":1,"verdict":"maybe"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		if a := <-got; a != (Answer{shieldbundle.VerdictRefuse, ReasonGone}) {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("over-long line detaches", func(t *testing.T) {
		s, path := newServer(t, time.Minute, os.Geteuid())
		c := attach(t, s, path)
		got := ask(s)
		c.Question(t)
		if _, err := c.Conn.Write([]byte(strings.Repeat("x", 2*shieldbundle.MaxDeciderLine))); err != nil {
			t.Fatal(err)
		}
		if a := <-got; a != (Answer{shieldbundle.VerdictRefuse, ReasonGone}) {
			t.Fatalf("%+v", a)
		}
	})
	t.Run("wrong owner", func(t *testing.T) {
		s, path := newServer(t, time.Second, os.Geteuid()+1)
		line, _ := decidertest.Dial(t, path).Line(5 * time.Second)
		if _, err := shieldbundle.ParseHeld(line); err == nil || !strings.Contains(err.Error(), "owner") {
			t.Fatalf("wrong owner told %q (%v)", line, err)
		}
		if a := s.Ask(context.Background(), held); a.Reason != ReasonNoDecider {
			t.Fatalf("a refused peer became the decider: %+v", a)
		}
	})
	t.Run("second decider", func(t *testing.T) {
		s, path := newServer(t, time.Second, os.Geteuid())
		attach(t, s, path)
		line, _ := decidertest.Dial(t, path).Line(5 * time.Second)
		if _, err := shieldbundle.ParseHeld(line); err == nil || !strings.Contains(err.Error(), "another decider") {
			t.Fatalf("second decider told %q (%v)", line, err)
		}
	})
}

// TestMaxPending: a flood of held connections opens at most MaxPending
// questions; the rest are refused at once.
func TestMaxPending(t *testing.T) {
	s, path := newServer(t, time.Minute, os.Geteuid())
	c := attach(t, s, path)
	var wg sync.WaitGroup
	answers := make(chan Answer, MaxPending+10)
	for i := 0; i < MaxPending; i++ {
		wg.Add(1)
		h := held
		h.Port = uint16(1000 + i) // distinct destinations: each its own question
		go func() { defer wg.Done(); answers <- s.Ask(context.Background(), h) }()
	}
	ids := make([]uint64, 0, MaxPending)
	for i := 0; i < MaxPending; i++ {
		ids = append(ids, c.Question(t).ID)
	}
	for i := 0; i < 10; i++ {
		h := held
		h.Port = uint16(2000 + i)
		if a := s.Ask(context.Background(), h); a != (Answer{shieldbundle.VerdictRefuse, ReasonBusy}) {
			t.Fatalf("question beyond MaxPending: %+v", a)
		}
	}
	for _, id := range ids {
		c.Answer(t, id, shieldbundle.VerdictOnce)
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.Reason != ReasonDecided {
			t.Fatalf("%+v", a)
		}
	}
}

func TestClose(t *testing.T) {
	s, path := newServer(t, time.Minute, os.Geteuid())
	c := attach(t, s, path)
	got := ask(s)
	c.Question(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a != (Answer{shieldbundle.VerdictRefuse, ReasonGone}) {
		t.Fatalf("%+v", a)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestRepeatsJoinTheOpenQuestion: packets to a destination that already
// has an open question (a SYN's retransmissions, a task repeating one
// connection to flood the operator) are not shown again and get that
// question's answer; another destination is a question of its own, and
// once answered the destination is asked about afresh.
func TestRepeatsJoinTheOpenQuestion(t *testing.T) {
	s, path := newServer(t, time.Minute, os.Geteuid())
	c := attach(t, s, path)
	first := ask(s)
	q := c.Question(t)
	const repeats = 50
	joined := make(chan Answer, repeats)
	for i := 0; i < repeats; i++ {
		go func() { joined <- s.Ask(context.Background(), held) }()
	}
	other := held
	other.Port = 8443
	otherAns := make(chan Answer, 1)
	go func() { otherAns <- s.Ask(context.Background(), other) }()
	// The next line the decider gets is the other destination's: none of
	// the repeats was shown.
	if q2 := c.Question(t); q2.Port != 8443 {
		t.Fatalf("a repeat of an open question was shown: %+v", q2)
	} else {
		c.Answer(t, q2.ID, shieldbundle.VerdictRefuse)
	}
	// Every repeat waits on the open question before it is answered.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := 0
		if oq := s.open[heldKey{held.Proto, held.Dst, held.Port}]; oq != nil {
			n = oq.joined
		}
		s.mu.Unlock()
		if n == repeats {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d repeats joined the open question", n, repeats)
		}
		time.Sleep(time.Millisecond)
	}
	c.Answer(t, q.ID, shieldbundle.VerdictOnce)
	if a := <-first; a != (Answer{shieldbundle.VerdictOnce, ReasonDecided}) {
		t.Fatalf("first: %+v", a)
	}
	for i := 0; i < repeats; i++ {
		if a := <-joined; a != (Answer{shieldbundle.VerdictOnce, ReasonDecided}) {
			t.Fatalf("repeat %d: %+v", i, a)
		}
	}
	if a := <-otherAns; a != (Answer{shieldbundle.VerdictRefuse, ReasonDecided}) {
		t.Fatalf("other: %+v", a)
	}
	// Answered: the destination is a new question again.
	again := ask(s)
	q3 := c.Question(t)
	if q3.Port != held.Port || q3.ID == q.ID {
		t.Fatalf("after the answer: %+v", q3)
	}
	c.Answer(t, q3.ID, shieldbundle.VerdictRefuse)
	if a := <-again; a.Verdict != shieldbundle.VerdictRefuse {
		t.Fatalf("again: %+v", a)
	}
}
