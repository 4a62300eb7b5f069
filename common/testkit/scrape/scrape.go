// Package scrape reads a daemon's Prometheus exposition in tests, with
// Prometheus' own text parser, so a test checks what a real scraper would
// see (docs/testing.md, Shared test helpers). Like common/testkit it is
// imported only from _test.go files.
package scrape

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are the parsed metric families of one exposition, by name.
type Families map[string]*dto.MetricFamily

// Port GETs http://127.0.0.1:PORT/metrics and returns the parsed families
// and the raw text (for "no token in the exposition" checks). It fails tb
// when the request fails or the text does not parse.
func Port(tb testing.TB, port int) (Families, string) {
	tb.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return Parse(tb, body), string(body)
}

// Parse parses an exposition in the text format; it fails tb when
// Prometheus' parser rejects it.
func Parse(tb testing.TB, body []byte) Families {
	tb.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// Labels returns a sample's labels as a map.
func Labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// Value is the value of the one sample of name whose labels are exactly
// want (a counter's or gauge's value, a histogram's count); -1 when there
// is none.
func (f Families) Value(name string, want map[string]string) float64 {
	for _, m := range f[name].GetMetric() {
		if got := Labels(m); len(got) == len(want) && has(got, want) {
			return value(m)
		}
	}
	return -1
}

// Sum is the sum of the values of name's samples whose labels include want;
// -1 when there is no family name.
func (f Families) Sum(name string, want map[string]string) float64 {
	fam, ok := f[name]
	if !ok {
		return -1
	}
	var sum float64
	for _, m := range fam.GetMetric() {
		if has(Labels(m), want) {
			sum += value(m)
		}
	}
	return sum
}

func has(got, want map[string]string) bool {
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return false
		}
	}
	return true
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}
