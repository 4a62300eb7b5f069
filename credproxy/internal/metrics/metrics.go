// Package metrics is the credential proxy's Prometheus metrics, served on
// a loopback address only when --metrics-listen asks for it
// (docs/credential-proxy.md, Metrics).
package metrics

import (
	"context"
	"net"
	"net/http"
	"time"

	cm "terok.dev/sandbox/common/metrics"
)

// Metrics holds the proxy's families, registered on a registry of its own
// (no global state). A nil *Metrics records nothing.
type Metrics struct {
	reg       *cm.Registry
	requests  *cm.CounterVec
	reqBytes  *cm.Counter
	respBytes *cm.Counter
	latency   *cm.HistogramVec
	open      *cm.Gauge
	inflight  *cm.Gauge
	lookups   *cm.CounterVec
	refreshes *cm.CounterVec
}

// New builds the families.
func New() *Metrics {
	r := cm.NewRegistry()
	m := &Metrics{
		reg: r,
		requests: r.Counter("terok_proxy_requests_total",
			"Requests by outcome (ok, refused, error) and reason (as in the audit record; empty for ok).", "outcome", "reason"),
		reqBytes:  r.Counter("terok_proxy_request_bytes_total", "Request body bytes forwarded upstream.").With(),
		respBytes: r.Counter("terok_proxy_response_bytes_total", "Response body bytes sent to clients.").With(),
		latency: r.Histogram("terok_proxy_request_duration_seconds",
			"From a request's arrival to the end of its response (a streamed one when it ends), by outcome.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}, "outcome"),
		open:     r.Gauge("terok_proxy_open_connections", "Client connections open now.").With(),
		inflight: r.Gauge("terok_proxy_requests_in_flight", "Requests being served now.").With(),
		lookups: r.Counter("terok_proxy_token_lookups_total",
			"Phantom token lookups by result (found, unknown, revoked, expired, error).", "result"),
		refreshes: r.Counter("terok_proxy_oauth_refreshes_total", "Background OAuth refreshes by outcome (ok, error).", "outcome"),
	}
	r.RegisterProcess()
	return m
}

// Request records one finished request.
func (m *Metrics) Request(outcome, reason string, reqBytes, respBytes int64, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.With(outcome, reason).Inc()
	m.reqBytes.Add(float64(reqBytes))
	m.respBytes.Add(float64(respBytes))
	m.latency.With(outcome).Observe(d.Seconds())
}

// Lookup records one token lookup result.
func (m *Metrics) Lookup(result string) {
	if m != nil {
		m.lookups.With(result).Inc()
	}
}

// Refresh records one background OAuth refresh.
func (m *Metrics) Refresh(ok bool) {
	if m == nil {
		return
	}
	o := "ok"
	if !ok {
		o = "error"
	}
	m.refreshes.With(o).Inc()
}

// InFlight adds d to the requests being served.
func (m *Metrics) InFlight(d float64) {
	if m != nil {
		m.inflight.Add(d)
	}
}

// ConnState is an http.Server.ConnState hook counting open connections.
func (m *Metrics) ConnState(_ net.Conn, s http.ConnState) {
	if m != nil {
		m.open.TrackConn(s)
	}
}

// CheckListen accepts only a loopback IP and a port (common/metrics).
func CheckListen(addr string) error { return cm.CheckListen(addr) }

// Server serves /metrics until Shutdown.
func (m *Metrics) Server() *http.Server { return m.reg.Server() }

// Serve runs srv on l until ctx ends; the caller owns both.
func Serve(ctx context.Context, srv *http.Server, l net.Listener) error { return cm.Serve(ctx, srv, l) }
