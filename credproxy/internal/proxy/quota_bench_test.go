package proxy

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/credproxy/internal/usage"
)

// BenchmarkProxyQuota: proxy throughput of one token without a quota vs
// one with a quota (both limits set, never reached), the usage flushed
// every second as the server does. The two proxies take turns in chunks of
// 500 requests (32 clients), so load changes on a shared machine hit both
// alike; reported: ns per request of each and on/off throughput (goal:
// on >= 0.95x of off).
func BenchmarkProxyQuota(b *testing.B) {
	body := `{"id":"msg_01","type":"message","content":[{"type":"text","text":"ok"}]}`
	off, _, _, _ := quotaSetup(b, nil, nil, body)
	on, _, tr, _ := quotaSetup(b, int64(math.MaxInt64), int64(math.MaxInt64), body)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx, usage.DefaultFlushEvery); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	const chunk, clients = 500, 32
	run := func(target string, n int) (time.Duration, time.Duration) {
		cpu0 := cpuTime()
		start := time.Now()
		var wg sync.WaitGroup
		var next atomic.Int64
		for g := 0; g < clients; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(n) {
					req, _ := http.NewRequest("GET", target+"/v1/messages", nil)
					req.Header.Set("Authorization", "Bearer "+benchToken)
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start), cpuTime() - cpu0
	}
	run(off, chunk) // warm both pools
	run(on, chunk)
	b.ResetTimer()
	var tOff, tOn, cOff, cOn time.Duration
	for left := b.N; left > 0; left -= chunk {
		n := min(chunk, left)
		t, c := run(off, n)
		tOff, cOff = tOff+t, cOff+c
		t, c = run(on, n)
		tOn, cOn = tOn+t, cOn+c
	}
	b.StopTimer()
	b.ReportMetric(float64(tOff.Nanoseconds())/float64(b.N), "ns/req-off")
	b.ReportMetric(float64(tOn.Nanoseconds())/float64(b.N), "ns/req-on")
	b.ReportMetric(float64(tOff)/float64(tOn), "on/off-throughput")
	// CPU of the whole process (clients, proxy, upstream) per request:
	// steadier than wall time on a loaded machine.
	b.ReportMetric(float64(cOff.Microseconds())/float64(b.N), "cpu-us/req-off")
	b.ReportMetric(float64(cOn.Microseconds())/float64(b.N), "cpu-us/req-on")
}

// BenchmarkQuotaFlush: one flush of N dirty tokens into the real
// database (one transaction), the cost the proxy pays about once a second.
func BenchmarkQuotaFlush(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			db := benchDB(b)
			tr := usage.New(db, nil)
			ctx := context.Background()
			counters := make([]*usage.Counter, n)
			for i := range counters {
				tok, err := db.CreateToken(ctx, creddb.TokenSpec{Project: "p", Task: "t", Set: "default", Provider: "bench",
					Quota: quota.Limits{MaxRequests: math.MaxInt64}})
				if err != nil {
					b.Fatal(err)
				}
				counters[i] = tr.Counter(tok, &quota.State{Limits: quota.Limits{MaxRequests: math.MaxInt64}})
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				for _, c := range counters {
					c.Admit()
					c.AddBytes(100)
				}
				if w, err := tr.Flush(ctx); err != nil || w != n {
					b.Fatalf("flushed %d, %v", w, err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "us/flush")
		})
	}
}
