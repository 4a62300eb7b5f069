package metrics

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"terok.dev/sandbox/common/testkit/scrape"
)

// TestExpositionParses: every kind, with labels that need escaping, is read
// back by Prometheus' own text parser with the values recorded.
func TestExpositionParses(t *testing.T) {
	r := NewRegistry()
	req := r.Counter("terok_test_requests_total", "Requests by outcome.\nSecond \\ line.", "outcome", "reason")
	open := r.Gauge("terok_test_open_connections", "Open now.")
	lat := r.Histogram("terok_test_duration_seconds", "Latency.", []float64{.01, .1, 1}, "kind")
	r.RegisterProcess()

	req.With("ok", "").Inc()
	req.With("ok", "").Add(2)
	req.With("ok", "").Add(-5) // ignored: counters never go down
	req.With("refused", "quote\" back\\ nl\n").Inc()
	open.With().Add(3)
	open.With().Add(-1)
	for _, x := range []float64{.005, .05, .05, 5} {
		lat.With("clone").Observe(x)
	}

	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	fams := scrape.Parse(t, buf.Bytes())

	rq := fams["terok_test_requests_total"]
	if rq.GetType() != dto.MetricType_COUNTER || rq.GetHelp() != "Requests by outcome.\nSecond \\ line." {
		t.Fatalf("requests family %v", rq)
	}
	got := map[string]float64{}
	for _, m := range rq.GetMetric() {
		l := scrape.Labels(m)
		got[l["outcome"]+"/"+l["reason"]] = m.GetCounter().GetValue()
	}
	if got["ok/"] != 3 || got["refused/quote\" back\\ nl\n"] != 1 || len(got) != 2 {
		t.Fatalf("request counts %v", got)
	}
	if g := fams["terok_test_open_connections"].GetMetric()[0].GetGauge().GetValue(); g != 2 {
		t.Fatalf("gauge %v, want 2", g)
	}
	h := fams["terok_test_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 4 || h.GetSampleSum() != 5.105 {
		t.Fatalf("histogram count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	want := []uint64{1, 3, 3, 4} // the parser keeps the +Inf bucket
	for i, b := range h.GetBucket() {
		if b.GetCumulativeCount() != want[i] {
			t.Fatalf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[i])
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Fatalf("%s missing", name)
		}
		m := f.GetMetric()[0]
		if m.GetGauge().GetValue() <= 0 && m.GetCounter().GetValue() <= 0 && name != "process_cpu_seconds_total" {
			t.Errorf("%s = 0", name)
		}
	}
}

// TestHandler: GET answers in the text format's media type; other methods
// are refused.
func TestHandler(t *testing.T) {
	r := NewRegistry()
	r.Counter("terok_test_total", "x").With().Inc()
	srv := httptest.NewServer(r.Server().Handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("content type %q", ct)
	}
	if expfmt.ResponseFormat(resp.Header).FormatType() != expfmt.TypeTextPlain {
		t.Fatalf("expfmt does not see text format in %q", resp.Header.Get("Content-Type"))
	}
	resp2, err := http.Post(srv.URL+"/metrics", "text/plain", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST status %d", resp2.StatusCode)
	}
}

func TestCheckListen(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9464", true},
		{"[::1]:9464", true},
		{"127.0.0.2:9464", true}, // all of 127/8 is loopback
		{"0.0.0.0:9464", false},
		{"[::]:9464", false},
		{"198.51.100.7:9464", false},
		{"localhost:9464", false}, // a name may resolve anywhere
		{"127.0.0.1", false},
		{"127.0.0.1:0", false},
		{":9464", false},
	} {
		err := CheckListen(c.addr)
		if (err == nil) != c.ok {
			t.Errorf("CheckListen(%q) = %v, want ok=%v", c.addr, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "example") {
			t.Errorf("CheckListen(%q): no example in %v", c.addr, err)
		}
	}
}

// FuzzLabelValue: any label value (task names come from operators) survives
// the exposition and Prometheus' parser unchanged.
func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"", "ok", `a"b`, `a\b`, "a\nb", "\\n", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !model.LabelValue(s).IsValid() {
			return // not UTF-8: Prometheus refuses it whoever writes it
		}
		r := NewRegistry()
		r.Counter("terok_fuzz_total", "fuzz", "v").With(s).Inc()
		var buf bytes.Buffer
		if err := r.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		fams := scrape.Parse(t, buf.Bytes())
		if got := scrape.Labels(fams["terok_fuzz_total"].GetMetric()[0])["v"]; got != s {
			t.Fatalf("label %q came back as %q", s, got)
		}
	})
}

func BenchmarkCounterWith(b *testing.B) {
	r := NewRegistry()
	c := r.Counter("terok_bench_total", "x", "outcome", "reason")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.With("ok", "").Inc()
		}
	})
}

func BenchmarkHistogramObserve(b *testing.B) {
	r := NewRegistry()
	h := r.Histogram("terok_bench_seconds", "x", []float64{.001, .01, .1, 1, 10}, "outcome")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.With("ok").Observe(.05)
		}
	})
}
