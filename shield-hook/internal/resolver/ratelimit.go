package resolver

import (
	"sync"
	"time"
)

// Forwarding rate (docs/shield-resolver.md, Limits): a token bucket over
// the queries that go upstream (answers from the cache and local answers
// cost nothing). Over it, the query gets SERVFAIL at once, without a
// packet leaving the namespace.
const (
	forwardRate  = 200 // queries per second, sustained
	forwardBurst = 400 // queries at once after a quiet spell
)

// rateLimiter is a token bucket that counts what it refused, so the
// resolver can log the count (not one line per query) at most once a
// second.
type rateLimiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	tokens  float64
	last    time.Time
	refused int
	logged  time.Time
}

func newRateLimiter(rate, burst float64, now time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: burst, tokens: burst, last: now}
}

// allow takes a token at now. When it refuses, report is the number of
// queries refused since the last report, once a second at most (0 when
// nothing is to be reported yet).
func (l *rateLimiter) allow(now time.Time) (ok bool, report int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(l.burst, l.tokens+d.Seconds()*l.rate)
		l.last = now
	}
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	l.refused++
	if now.Sub(l.logged) >= time.Second {
		report, l.refused, l.logged = l.refused, 0, now
	}
	return false, report
}
