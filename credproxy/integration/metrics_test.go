package integration

import (
	"fmt"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/common/testkit/scrape"
)

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
	ports := testkit.FreePorts(t, 2) // the proxy's and the metrics port, distinct
	e.port = ports[0]
	mport := ports[1]
	e.start(fmt.Sprintf("--metrics-listen=127.0.0.1:%d", mport))
	for i := 0; i < 3; i++ {
		if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tk); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if code, _, _ := e.get("/v1/x", "Authorization", "Bearer "+tok(721)); code != 401 {
		t.Fatalf("unknown token: %d", code)
	}
	fams, text := scrape.Port(t, mport)
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
		if got := fams.Sum(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := fams.Sum("terok_proxy_open_connections", nil); got < 1 {
		t.Errorf("open connections %v with a keep-alive client connected", got)
	}
	for _, n := range []string{"terok_proxy_request_bytes_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[n]; !ok {
			t.Errorf("no family %s", n)
		}
	}
	if strings.Contains(text, tk) || strings.Contains(text, "REAL-metrics-key") {
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
