package launch

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// TimingEnv names the environment variable that turns on the per-phase
// timing of a launch: when it is set to a non-empty value, `terok-sandbox
// run` writes one line per phase to stderr. It exists to find where a
// launch spends its time (docs/runner.md, Performance); it prints nothing
// secret, only phase names and durations.
const TimingEnv = "TEROK_DEBUG_TIMING"

// Timing records the phases of one launch. A nil *Timing records nothing,
// so callers mark phases unconditionally. Each line gives the phase's wall
// time and the CPU the process itself spent meanwhile (user + system, all
// threads, children excluded): on a loaded host wall time mostly waits for
// a core, CPU time is what the phase costs.
type Timing struct {
	mu      sync.Mutex
	out     io.Writer
	start   time.Time
	last    time.Time
	lastCPU time.Duration
}

// selfCPU is the CPU time the process has used so far (getrusage
// RUSAGE_SELF: every thread, not the children), 0 if unknown.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// NewTiming starts a phase clock writing to out; nil out gives nil.
func NewTiming(out io.Writer) *Timing {
	if out == nil {
		return nil
	}
	now := time.Now()
	return &Timing{out: out, start: now, last: now, lastCPU: selfCPU()}
}

// Mark ends the current phase, naming it, and starts the next one.
func (t *Timing) Mark(phase string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now, cpu := time.Now(), selfCPU()
	fmt.Fprintf(t.out, "timing: %-28s %8.3f ms  (at %8.3f ms)  cpu %7.3f ms  (total %7.3f ms)\n", phase,
		ms(now.Sub(t.last)), ms(now.Sub(t.start)), ms(cpu-t.lastCPU), ms(cpu))
	t.last, t.lastCPU = now, cpu
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
