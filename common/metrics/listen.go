package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

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

// Server serves /metrics from r.
func (r *Registry) Server() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", r.Handler())
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

// RegisterProcess adds the standard process_* and go_* figures a scraper
// expects (the names client_golang's collectors use), read at scrape time.
func (r *Registry) RegisterProcess() {
	start := time.Now()
	r.CounterFunc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", func() float64 {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
			return 0
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	})
	r.GaugeFunc("process_resident_memory_bytes", "Resident memory size in bytes.", residentBytes)
	r.GaugeFunc("process_open_fds", "Number of open file descriptors.", func() float64 {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return 0
		}
		return float64(len(ents))
	})
	r.GaugeFunc("process_start_time_seconds", "Start time of the metrics registry (about the process's) since the epoch in seconds.",
		func() float64 { return float64(start.UnixNano()) / 1e9 })
	r.GaugeFunc("go_goroutines", "Number of goroutines that currently exist.", func() float64 { return float64(runtime.NumGoroutine()) })
	r.GaugeFunc("go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects.", func() float64 {
		s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		rtmetrics.Read(s)
		if s[0].Value.Kind() != rtmetrics.KindUint64 {
			return 0
		}
		return float64(s[0].Value.Uint64())
	})
}

// residentBytes reads the resident set from /proc/self/statm (pages).
func residentBytes() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return float64(pages) * float64(os.Getpagesize())
}
