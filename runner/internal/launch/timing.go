package launch

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// TimingEnv names the environment variable that turns on the per-phase
// timing of a launch: when it is set to a non-empty value, `terok-sandbox
// run` writes one line per phase to stderr. It exists to find where a
// launch spends its time (docs/runner.md, Performance); it prints nothing
// secret, only phase names and durations.
const TimingEnv = "TEROK_DEBUG_TIMING"

// Timing records the phases of one launch. A nil *Timing records nothing,
// so callers mark phases unconditionally.
type Timing struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
	last  time.Time
}

// NewTiming starts a phase clock writing to out; nil out gives nil.
func NewTiming(out io.Writer) *Timing {
	if out == nil {
		return nil
	}
	now := time.Now()
	return &Timing{out: out, start: now, last: now}
}

// Mark ends the current phase, naming it, and starts the next one.
func (t *Timing) Mark(phase string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	fmt.Fprintf(t.out, "timing: %-28s %8.3f ms  (at %8.3f ms)\n", phase,
		float64(now.Sub(t.last).Microseconds())/1000, float64(now.Sub(t.start).Microseconds())/1000)
	t.last = now
}

type timingKey struct{}

// WithTiming returns ctx carrying t (like net/http/httptrace, the clock
// travels with the request it measures).
func WithTiming(ctx context.Context, t *Timing) context.Context {
	if t == nil {
		return ctx
	}
	return context.WithValue(ctx, timingKey{}, t)
}

// TimingFrom returns the clock carried by ctx, or nil.
func TimingFrom(ctx context.Context) *Timing {
	t, _ := ctx.Value(timingKey{}).(*Timing)
	return t
}

// Mark marks a phase on ctx's clock, if any.
func Mark(ctx context.Context, phase string) { TimingFrom(ctx).Mark(phase) }
