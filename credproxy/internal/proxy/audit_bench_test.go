package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/credproxy/internal/auditq"
	"terok.dev/sandbox/credproxy/internal/metrics"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// auditBenchProxy is the bench proxy with the audit off, or on through the
// server's queue and a real audit file.
func auditBenchProxy(b *testing.B, on bool, met ...*metrics.Metrics) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"msg_01","type":"message","content":[{"type":"text","text":"ok"}]}`)
	}))
	b.Cleanup(up.Close)
	db := benchDB(b)
	u, _ := url.Parse(up.URL)
	res := db.NewResolver()
	b.Cleanup(func() { res.Close() })
	o := Options{Store: benchStore{res, db}, DBConcurrency: -1,
		Routes: routes.Table{"bench": {Provider: "bench", Scheme: "http", Host: u.Host, AuthHeader: "dynamic"}}}
	if on {
		w, err := audit.Open(filepath.Join(b.TempDir(), "audit", "proxy.jsonl"), audit.Options{MaxBytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		q := auditq.New(w, EncodeEntry, 0, nil)
		b.Cleanup(q.Close)
		o.Audit = q
	}
	if len(met) > 0 {
		o.Metrics = met[0]
	}
	p := New(o)
	b.Cleanup(p.Close)
	srv := httptest.NewServer(p)
	b.Cleanup(srv.Close)
	return srv.URL
}

// BenchmarkProxyAudit: throughput (32 concurrent clients; also with the
// metrics on) and sequential p50 with the audit off and on, in one run so the figures compare (goal:
// on >= 0.95x of off). Run with -benchtime long enough for the writer
// goroutine's backlog to count: the queue is closed (drained) inside the
// measured time of the "on" runs' cleanup only, so the parallel figure
// includes the disk writes through the shared CPUs.
func BenchmarkProxyAudit(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run("parallel/"+name, func(b *testing.B) {
			target := auditBenchProxy(b, on)
			c0 := cpuTime()
			benchGet(b, target, true)
			// Process CPU (client, proxy, upstream and the audit writer
			// share it) per request: steadier than ns/op on a busy host.
			b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-us/op")
		})
		b.Run("parallel/"+name+"+metrics", func(b *testing.B) {
			target := auditBenchProxy(b, on, metrics.New())
			c0 := cpuTime()
			benchGet(b, target, true)
			b.ReportMetric(float64((cpuTime()-c0).Microseconds())/float64(b.N), "cpu-us/op")
		})
		b.Run("sequential/"+name, func(b *testing.B) {
			target := auditBenchProxy(b, on) + "/v1/messages"
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				req, _ := http.NewRequestWithContext(context.Background(), "GET", target, nil)
				req.Header.Set("Authorization", "Bearer "+benchToken)
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEncodeEntry is the writer goroutine's share of a record.
func BenchmarkEncodeEntry(b *testing.B) {
	path, status, req, resp, ms, rf := "/v1/messages", 200, int64(512), int64(18342), 812.417, false
	e := Entry{Time: time.Now(), Event: "request", Outcome: "ok", Project: "demo", Task: "t1", TokenPrefix: "terok-p-abcd",
		Provider: "claude", CredentialSet: "default", Method: "POST", Host: "api.anthropic.com", Path: &path,
		Status: &status, ReqBytes: &req, RespBytes: &resp, DurationMS: &ms, OAuthRefresh: &rf, Remote: "10.88.0.5:41234"}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = EncodeEntry(buf[:0], &e); err != nil {
			b.Fatal(err)
		}
	}
}
