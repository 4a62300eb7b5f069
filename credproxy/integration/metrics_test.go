package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"terok.dev/sandbox/common/testkit"
)

// scrape reads the proxy's /metrics with Prometheus' own text parser.
func scrape(t *testing.T, port int) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the sum of a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var sum float64
	f, ok := fams[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetrics: --metrics-listen serves the documented families on
// loopback; a real scrape parsed by expfmt counts the requests by outcome
// and reason, bytes, latency, token lookups and open connections; no
// secret and no token in the exposition; a non-loopback address is a
// usage error.
func TestMetrics(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("api", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-metrics-key")+`"}`)
	tk := e.token(tok(720), "default", "api")
	mport := testkit.FreePort(t)
	e.start(fmt.Sprintf("--metrics-listen=127.0.0.1:%d", mport))
	for i := 0; i < 3; i++ {
		if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tk); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tok(721)); code != 401 {
		t.Fatalf("unknown token: %d", code)
	}
	fams := scrape(t, mport)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"terok_proxy_requests_total", map[string]string{"outcome": "ok"}, 3},
		{"terok_proxy_requests_total", map[string]string{"outcome": "refused", "reason": "unknown-token"}, 1},
		{"terok_proxy_request_duration_seconds", map[string]string{"outcome": "ok"}, 3},
		{"terok_proxy_token_lookups_total", map[string]string{"result": "found"}, 3},
		{"terok_proxy_token_lookups_total", map[string]string{"result": "unknown"}, 1},
		{"terok_proxy_response_bytes_total", nil, float64(3*len(`{"ok":true,"n":0}`) + len("Invalid token"))},
		{"terok_proxy_requests_in_flight", nil, 0},
	} {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(fams, "terok_proxy_open_connections", nil); got < 1 {
		t.Errorf("open connections %v with a keep-alive client connected", got)
	}
	for _, n := range []string{"terok_proxy_request_bytes_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[n]; !ok {
			t.Errorf("no family %s", n)
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), tk) || strings.Contains(string(body), "REAL-metrics-key") {
		t.Error("a token or secret in the metrics")
	}
	e.stop()

	for _, bad := range []string{"0.0.0.0:9464", "198.51.100.7:9464", "localhost:9464", "127.0.0.1", "127.0.0.1:0"} {
		code, out := runProxy(t, "--socket-path=/tmp/x.sock", "--db-path=/tmp/x.db", "--routes-file=/tmp/r.json", "--metrics-listen="+bad)
		if code != 2 || !strings.Contains(out, "--metrics-listen") || !strings.Contains(out, "example") {
			t.Errorf("--metrics-listen=%s: exit %d %q", bad, code, out)
		}
	}
}
