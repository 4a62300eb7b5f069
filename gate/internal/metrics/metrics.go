// Package metrics is the gate's Prometheus metrics, served on a loopback
// address only when --metrics-listen asks for it (docs/gate.md, Metrics;
// names: docs/operations.md, Metrics).
package metrics

import (
	"net"
	"net/http"
	"time"

	cm "terok.dev/sandbox/common/metrics"
)

// Metrics holds the gate's families on a registry of its own. A nil
// *Metrics (metrics off) records nothing.
type Metrics struct {
	reg       *cm.Registry
	requests  *cm.CounterVec
	reqBytes  *cm.CounterVec
	respBytes *cm.CounterVec
	latency   *cm.HistogramVec
	git       *cm.Gauge
	lookups   *cm.CounterVec
	open      *cm.Gauge
}

// New builds the families.
func New() *Metrics {
	r := cm.NewRegistry()
	m := &Metrics{
		reg: r,
		requests: r.Counter("terok_gate_requests_total",
			"Requests by kind (ls-refs, clone, fetch, push, none), outcome (ok, refused, error) and reason (as in the audit record; empty for ok).",
			"kind", "outcome", "reason"),
		reqBytes:  r.Counter("terok_gate_request_bytes_total", "Request body bytes read (after gzip decoding), by kind.", "kind"),
		respBytes: r.Counter("terok_gate_response_bytes_total", "Response body bytes sent, by kind.", "kind"),
		latency: r.Histogram("terok_gate_request_duration_seconds",
			"From a request's arrival to the end of its response, by kind and outcome.",
			[]float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}, "kind", "outcome"),
		git:     r.Gauge("terok_gate_git_processes", "Git backend slots held now (a running upload-pack or receive-pack).").With(),
		lookups: r.Counter("terok_gate_token_lookups_total", "Gate token lookups by result (found, unknown, revoked, expired, task-gone).", "result"),
		open:    r.Gauge("terok_gate_open_connections", "Client connections open now.").With(),
	}
	r.RegisterProcess()
	return m
}

// Request records one finished request.
func (m *Metrics) Request(kind, outcome, reason string, reqBytes, respBytes int64, d time.Duration) {
	if m == nil {
		return
	}
	if kind == "" {
		kind = "none"
	}
	m.requests.With(kind, outcome, reason).Inc()
	m.reqBytes.With(kind).Add(float64(reqBytes))
	m.respBytes.With(kind).Add(float64(respBytes))
	m.latency.With(kind, outcome).Observe(d.Seconds())
}

// Lookup records one token lookup result.
func (m *Metrics) Lookup(result string) {
	if m != nil {
		m.lookups.With(result).Inc()
	}
}

// Git adds d to the git slots held.
func (m *Metrics) Git(d float64) {
	if m != nil {
		m.git.Add(d)
	}
}

// ConnState is an http.Server.ConnState hook counting open connections.
func (m *Metrics) ConnState(_ net.Conn, s http.ConnState) {
	if m != nil {
		m.open.TrackConn(s)
	}
}

// Server serves /metrics.
func (m *Metrics) Server() *http.Server { return m.reg.Server() }
