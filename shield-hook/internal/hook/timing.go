package hook

import (
	"fmt"
	"strings"
	"time"
)

// TimingEnv, when set to a non-empty value in the hook's environment,
// makes the createRuntime stage print one line with the time each step
// took to stderr (OCI runtimes pass no environment, so this is for
// benchmarks and manual runs; podman shows hook stderr only on failure).
const TimingEnv = "TEROK_SHIELD_HOOK_TIMING"

// timer records the duration of consecutive steps; a nil timer records
// nothing, so the fast path pays one nil check per step.
type timer struct {
	r     *run
	start time.Time
	last  time.Time
	steps []string
}

func (r *run) timer() *timer {
	if r.opt.Getenv == nil || r.opt.Getenv(TimingEnv) == "" {
		return nil
	}
	now := time.Now()
	return &timer{r: r, start: now, last: now}
}

func (t *timer) mark(step string) {
	if t == nil {
		return
	}
	now := time.Now()
	t.steps = append(t.steps, fmt.Sprintf("%s=%.2fms", strings.ReplaceAll(step, " ", "_"), float64(now.Sub(t.last).Microseconds())/1000))
	t.last = now
}

// record adds a step measured elsewhere (work that ran concurrently).
func (t *timer) record(step string, d time.Duration) {
	if t == nil {
		return
	}
	t.steps = append(t.steps, fmt.Sprintf("%s=%.2fms", strings.ReplaceAll(step, " ", "_"), float64(d.Microseconds())/1000))
}

func (t *timer) report() {
	if t == nil {
		return
	}
	fmt.Fprintf(t.r.opt.Stderr, "%stiming total=%.2fms %s\n", msgPrefix, float64(time.Since(t.start).Microseconds())/1000, strings.Join(t.steps, " "))
}
