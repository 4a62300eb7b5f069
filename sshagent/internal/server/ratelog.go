package server

import (
	"log/slog"
	"sync"
	"time"
)

// rateLog lets through one record per key and interval and counts the
// rest, so a client hammering the agent with bad tokens or connections
// cannot flood the log; the next record that passes reports how many were
// suppressed.
type rateLog struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func newRateLog(log *slog.Logger, interval time.Duration) *rateLog {
	return &rateLog{log: log, interval: interval, now: time.Now,
		last: map[string]time.Time{}, held: map[string]int{}}
}

// Warn logs msg at WARN unless a record with the same key passed less than
// the interval ago. Keys are a fixed set of constants, so the maps stay small.
func (r *rateLog) Warn(log *slog.Logger, key, msg string, args ...any) {
	r.mu.Lock()
	now := r.now()
	if t, ok := r.last[key]; ok && now.Sub(t) < r.interval {
		r.held[key]++
		r.mu.Unlock()
		return
	}
	r.last[key] = now
	n := r.held[key]
	delete(r.held, key)
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	log.Warn(msg, args...)
}
