// Package metrics is the SSH agent's Prometheus metrics, served on a
// loopback address only when --metrics-listen asks for it
// (docs/ssh-agent.md, Metrics; names: docs/operations.md, Metrics).
package metrics

import (
	"net/http"
	"time"

	cm "terok.dev/sandbox/common/metrics"
)

// Metrics holds the agent's families on a registry of its own. A nil
// *Metrics (metrics off) records nothing.
type Metrics struct {
	reg      *cm.Registry
	sigs     *cm.CounterVec
	refusals *cm.CounterVec
	latency  *cm.HistogramVec
	open     *cm.Gauge
	lookups  *cm.CounterVec
}

// New builds the families.
func New() *Metrics {
	r := cm.NewRegistry()
	m := &Metrics{
		reg: r,
		sigs: r.Counter("terok_agent_signatures_total",
			"Sign requests by outcome (ok, refused, error) and reason (as in the audit record; empty for ok).", "outcome", "reason"),
		refusals: r.Counter("terok_agent_refusals_total",
			"Refusals by reason, of a session (before any agent message) or of a sign request.", "reason"),
		latency: r.Histogram("terok_agent_sign_duration_seconds", "Time to sign and record one signature, by outcome (ok, error).",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}, "outcome"),
		open:    r.Gauge("terok_agent_open_connections", "Client connections open now (TCP and unix socket).").With(),
		lookups: r.Counter("terok_agent_token_lookups_total", "Phantom token lookups by result (found, unknown, expired, error).", "result"),
	}
	r.RegisterProcess()
	return m
}

// Sign records one sign request's outcome; d is the signing time (zero
// for a refusal, which is not timed).
func (m *Metrics) Sign(outcome, reason string, d time.Duration) {
	if m == nil {
		return
	}
	m.sigs.With(outcome, reason).Inc()
	if outcome == "refused" {
		m.refusals.With(reason).Inc()
		return
	}
	m.latency.With(outcome).Observe(d.Seconds())
}

// Refuse records a session refused before any agent message.
func (m *Metrics) Refuse(reason string) {
	if m != nil {
		m.refusals.With(reason).Inc()
	}
}

// Lookup records one token lookup result.
func (m *Metrics) Lookup(result string) {
	if m != nil {
		m.lookups.With(result).Inc()
	}
}

// Conn adds d to the open connections.
func (m *Metrics) Conn(d float64) {
	if m != nil {
		m.open.Add(d)
	}
}

// Server serves /metrics.
func (m *Metrics) Server() *http.Server { return m.reg.Server() }
