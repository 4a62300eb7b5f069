// Package metrics is the credential proxy's Prometheus metrics, served on
// a loopback address only when --metrics-listen asks for it
// (docs/credential-proxy.md, Metrics).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the proxy's collectors, registered on a registry of its
// own (no global state). A nil *Metrics records nothing.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	reqBytes  prometheus.Counter
	respBytes prometheus.Counter
	latency   *prometheus.HistogramVec
	open      prometheus.Gauge
	inflight  prometheus.Gauge
	lookups   *prometheus.CounterVec
	refreshes *prometheus.CounterVec
}

// New builds the collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "terok_proxy_requests_total",
			Help: "Requests by outcome (ok, refused, error) and reason (as in the audit record; empty for ok).",
		}, []string{"outcome", "reason"}),
		reqBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "terok_proxy_request_bytes_total", Help: "Request body bytes forwarded upstream.",
		}),
		respBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "terok_proxy_response_bytes_total", Help: "Response body bytes sent to clients.",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "terok_proxy_request_duration_seconds",
			Help:    "From a request's arrival to the end of its response (a streamed one when it ends), by outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"outcome"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "terok_proxy_open_connections", Help: "Client connections open now.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "terok_proxy_requests_in_flight", Help: "Requests being served now.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "terok_proxy_token_lookups_total",
			Help: "Phantom token lookups by result (found, unknown, revoked, error).",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "terok_proxy_oauth_refreshes_total", Help: "Background OAuth refreshes by outcome (ok, error).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.reqBytes, m.respBytes, m.latency, m.open, m.inflight, m.lookups, m.refreshes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Request records one finished request.
func (m *Metrics) Request(outcome, reason string, reqBytes, respBytes int64, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(outcome, reason).Inc()
	m.reqBytes.Add(float64(reqBytes))
	m.respBytes.Add(float64(respBytes))
	m.latency.WithLabelValues(outcome).Observe(d.Seconds())
}

// Lookup records one token lookup result.
func (m *Metrics) Lookup(result string) {
	if m != nil {
		m.lookups.WithLabelValues(result).Inc()
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
	m.refreshes.WithLabelValues(o).Inc()
}

// InFlight adds d to the requests being served.
func (m *Metrics) InFlight(d float64) {
	if m != nil {
		m.inflight.Add(d)
	}
}

// ConnState is an http.Server.ConnState hook counting open connections.
func (m *Metrics) ConnState(_ net.Conn, s http.ConnState) {
	if m == nil {
		return
	}
	switch s {
	case http.StateNew:
		m.open.Inc()
	case http.StateClosed, http.StateHijacked:
		m.open.Dec()
	}
}

// CheckListen accepts only a loopback IP and a port ("127.0.0.1:9464",
// "[::1]:9464"): the metrics name projects and outcomes, which a task
// container must not read.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %q: %v (example: --metrics-listen 127.0.0.1:9464)", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--metrics-listen %q: only a loopback address (127.0.0.1 or ::1) is allowed (example: --metrics-listen 127.0.0.1:9464)", addr)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("--metrics-listen %q: give a port (example: --metrics-listen 127.0.0.1:9464)", addr)
	}
	return nil
}

// Server serves /metrics on l until Shutdown.
func (m *Metrics) Server() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// Serve runs srv on l until ctx ends; the caller owns both.
func Serve(ctx context.Context, srv *http.Server, l net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		return nil
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
