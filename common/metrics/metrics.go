// Package metrics is the daemons' Prometheus metrics: a registry of
// counters, gauges and histograms written in the Prometheus text format
// (version 0.0.4), served on a loopback address only when --metrics-listen
// asks for it (docs/operations.md, Metrics).
//
// It is our own small exposition rather than client_golang because linking
// client_golang (and the protobuf runtime under it) costs every daemon
// about 4 MiB of idle RSS in package initialisation, paid with metrics off
// too, which put the credential proxy over its 15 MiB idle target
// (docs/credential-proxy.md, Audit records and metrics (issue 13)). Nothing
// here runs until a daemon builds a Registry, and the tests hold the output
// to Prometheus' own parser (expfmt).
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds one daemon's metric families in registration order. It is
// built per process (no package state); a nil *Registry is metrics off.
type Registry struct {
	mu       sync.Mutex
	families []family
	names    map[string]bool
}

type family interface {
	write(w *bufio.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{names: map[string]bool{}} }

func (r *Registry) add(name string, f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !validName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name)) // a programming error, found by the first test
	}
	if r.names[name] {
		panic(fmt.Sprintf("metrics: %s registered twice", name))
	}
	r.names[name] = true
	r.families = append(r.families, f)
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// vec is the labelled children of one family, created on first use.
type vec[T any] struct {
	name, help, kind string
	labels           []string
	mu               sync.RWMutex
	children         map[string]*child[T]
	newT             func() *T
}

type child[T any] struct {
	values []string
	m      *T
}

func newVec[T any](name, help, kind string, labels []string, newT func() *T) *vec[T] {
	for _, l := range labels {
		if !validName(l) || strings.HasPrefix(l, "__") || l == "le" {
			panic(fmt.Sprintf("metrics: invalid label %q on %s", l, name))
		}
	}
	return &vec[T]{name: name, help: help, kind: kind, labels: labels, children: map[string]*child[T]{}, newT: newT}
}

func (v *vec[T]) with(values []string) *T {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c := v.children[key]
	v.mu.RUnlock()
	if c != nil {
		return c.m
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.children[key]; c == nil {
		c = &child[T]{values: append([]string(nil), values...), m: v.newT()}
		v.children[key] = c
	}
	return c.m
}

// sorted returns the children in label order, so scrapes are stable.
func (v *vec[T]) sorted() []*child[T] {
	v.mu.RLock()
	out := make([]*child[T], 0, len(v.children))
	for _, c := range v.children {
		out = append(out, c)
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		return strings.Join(out[i].values, "\xff") < strings.Join(out[j].values, "\xff")
	})
	return out
}

func (v *vec[T]) header(w *bufio.Writer) {
	w.WriteString("# HELP " + v.name + " " + escapeHelp(v.help) + "\n")
	w.WriteString("# TYPE " + v.name + " " + v.kind + "\n")
}

// value is a float64 updated atomically (counters and gauges).
type value struct{ bits atomic.Uint64 }

func (x *value) add(d float64) {
	for {
		old := x.bits.Load()
		if x.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

func (x *value) get() float64 { return math.Float64frombits(x.bits.Load()) }

// Counter only goes up.
type Counter struct{ v value }

// Inc adds one.
func (c *Counter) Inc() { c.v.add(1) }

// Add adds d; a negative d is ignored (a counter never goes down).
func (c *Counter) Add(d float64) {
	if d > 0 {
		c.v.add(d)
	}
}

// CounterVec is a counter family with labels.
type CounterVec struct{ v *vec[Counter] }

// Counter registers a counter family; labels name its dimensions.
func (r *Registry) Counter(name, help string, labels ...string) *CounterVec {
	cv := &CounterVec{newVec(name, help, "counter", labels, func() *Counter { return &Counter{} })}
	r.add(name, cv)
	return cv
}

// With returns the counter of these label values (in label order).
func (cv *CounterVec) With(values ...string) *Counter { return cv.v.with(values) }

func (cv *CounterVec) write(w *bufio.Writer) {
	cv.v.header(w)
	for _, c := range cv.v.sorted() {
		sample(w, cv.v.name, cv.v.labels, c.values, "", "", c.m.v.get())
	}
}

// Gauge goes up and down.
type Gauge struct{ v value }

// Add adds d (negative to subtract).
func (g *Gauge) Add(d float64) { g.v.add(d) }

// Set sets the value.
func (g *Gauge) Set(x float64) { g.v.bits.Store(math.Float64bits(x)) }

// TrackConn is an http.Server.ConnState step counting open connections in
// g: up when one is accepted, down when it closes or is hijacked (both
// daemons' "open connections" gauges).
func (g *Gauge) TrackConn(s http.ConnState) {
	switch s {
	case http.StateNew:
		g.Add(1)
	case http.StateClosed, http.StateHijacked:
		g.Add(-1)
	}
}

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ v *vec[Gauge] }

// Gauge registers a gauge family.
func (r *Registry) Gauge(name, help string, labels ...string) *GaugeVec {
	gv := &GaugeVec{newVec(name, help, "gauge", labels, func() *Gauge { return &Gauge{} })}
	r.add(name, gv)
	return gv
}

// With returns the gauge of these label values.
func (gv *GaugeVec) With(values ...string) *Gauge { return gv.v.with(values) }

func (gv *GaugeVec) write(w *bufio.Writer) {
	gv.v.header(w)
	for _, c := range gv.v.sorted() {
		sample(w, gv.v.name, gv.v.labels, c.values, "", "", c.m.v.get())
	}
}

// Histogram counts observations into buckets. One mutex per histogram keeps
// a scrape's buckets, count and sum consistent with each other.
type Histogram struct {
	upper  []float64
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

// Observe records one value.
func (h *Histogram) Observe(x float64) {
	i := sort.SearchFloat64s(h.upper, x) // first bucket with upper >= x
	h.mu.Lock()
	h.counts[i]++
	h.sum += x
	h.n++
	h.mu.Unlock()
}

// HistogramVec is a histogram family with labels.
type HistogramVec struct {
	v     *vec[Histogram]
	upper []float64
}

// Histogram registers a histogram family with these bucket upper bounds
// (ascending; +Inf is implied).
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if len(buckets) == 0 || !sort.Float64sAreSorted(buckets) || math.IsInf(buckets[len(buckets)-1], 1) {
		panic(fmt.Sprintf("metrics: %s needs ascending finite buckets", name))
	}
	up := append([]float64(nil), buckets...)
	hv := &HistogramVec{upper: up}
	hv.v = newVec(name, help, "histogram", labels, func() *Histogram {
		return &Histogram{upper: up, counts: make([]uint64, len(up)+1)}
	})
	r.add(name, hv)
	return hv
}

// With returns the histogram of these label values.
func (hv *HistogramVec) With(values ...string) *Histogram { return hv.v.with(values) }

func (hv *HistogramVec) write(w *bufio.Writer) {
	hv.v.header(w)
	for _, c := range hv.v.sorted() {
		h := c.m
		h.mu.Lock()
		counts := append([]uint64(nil), h.counts...)
		sum, n := h.sum, h.n
		h.mu.Unlock()
		var cum uint64
		for i, up := range hv.upper {
			cum += counts[i]
			sample(w, hv.v.name+"_bucket", hv.v.labels, c.values, "le", formatFloat(up), float64(cum))
		}
		sample(w, hv.v.name+"_bucket", hv.v.labels, c.values, "le", "+Inf", float64(n))
		sample(w, hv.v.name+"_sum", hv.v.labels, c.values, "", "", sum)
		sample(w, hv.v.name+"_count", hv.v.labels, c.values, "", "", float64(n))
	}
}

// Func is a family whose one unlabelled value is read at scrape time (the
// process and runtime figures).
type funcFamily struct {
	name, help, kind string
	read             func() float64
}

// GaugeFunc registers a gauge read by f at each scrape.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.add(name, &funcFamily{name, help, "gauge", f})
}

// CounterFunc registers a counter read by f at each scrape.
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.add(name, &funcFamily{name, help, "counter", f})
}

func (f *funcFamily) write(w *bufio.Writer) {
	w.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
	w.WriteString("# TYPE " + f.name + " " + f.kind + "\n")
	sample(w, f.name, nil, nil, "", "", f.read())
}

func sample(w *bufio.Writer, name string, labels, values []string, extraL, extraV string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extraL != "" {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l + `="` + escapeLabel(values[i]) + `"`)
		}
		if extraL != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extraL + `="` + extraV + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
func escapeHelp(s string) string  { return helpEscaper.Replace(s) }

// ContentType is the text format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes every family in the text format.
func (r *Registry) WriteText(out io.Writer) error {
	r.mu.Lock()
	fams := append([]family(nil), r.families...)
	r.mu.Unlock()
	w := bufio.NewWriter(out)
	for _, f := range fams {
		f.write(w)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("metrics: write: %w", err)
	}
	return nil
}

// Handler serves the registry's text exposition.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		_ = r.WriteText(w) // the scraper went away; nothing to tell it
	})
}
