package resolver

import (
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, c := range []struct {
		name    string
		queries int           // at t0
		then    time.Duration // one more query this long after t0
		allowed int           // of the queries at t0
		later   bool          // the later query allowed
	}{
		{"within the burst", forwardBurst, 0, forwardBurst, false},
		{"over the burst", forwardBurst + 50, 0, forwardBurst, false},
		{"refilled at the rate", forwardBurst + 1, 10 * time.Millisecond, forwardBurst, true},
		{"not refilled within a token's time", forwardBurst, time.Millisecond, forwardBurst, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newRateLimiter(forwardRate, forwardBurst, t0)
			allowed, reported := 0, 0
			for i := 0; i < c.queries; i++ {
				ok, n := l.allow(t0)
				if ok {
					allowed++
				}
				reported += n
			}
			if allowed != c.allowed {
				t.Fatalf("%d allowed, want %d", allowed, c.allowed)
			}
			if refused := c.queries - allowed; refused > 0 && reported != 1 {
				// The first refusal is reported at once, the rest of the
				// same second are counted for the next report.
				t.Errorf("reported %d at t0, want the first refusal (1)", reported)
			}
			if c.then > 0 {
				if ok, _ := l.allow(t0.Add(c.then)); ok != c.later {
					t.Errorf("query %s later allowed = %v, want %v", c.then, ok, c.later)
				}
			}
		})
	}
	// The count of a second's refusals comes with the next report.
	l := newRateLimiter(1, 1, t0)
	l.allow(t0)
	if _, n := l.allow(t0); n != 1 {
		t.Fatalf("first refusal reported %d", n)
	}
	for i := 0; i < 9; i++ {
		if _, n := l.allow(t0.Add(time.Duration(i) * time.Millisecond)); n != 0 {
			t.Fatalf("reported again within the second: %d", n)
		}
	}
	l.tokens, l.last = 0, t0.Add(1100*time.Millisecond) // no refill: the bucket is empty then
	if _, n := l.allow(t0.Add(1100 * time.Millisecond)); n != 10 {
		t.Fatalf("report after a second: %d, want 10", n)
	}
}
