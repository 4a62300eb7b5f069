package scrape

import "testing"

func TestValueAndSum(t *testing.T) {
	fams := Parse(t, []byte(`# TYPE r counter
r{outcome="ok",reason=""} 3
r{outcome="refused",reason="no-key"} 2
r{outcome="refused",reason="unknown-token"} 1
# TYPE g gauge
g 7
# TYPE h histogram
h_bucket{le="+Inf"} 4
h_sum 1.5
h_count 4
`))
	for _, c := range []struct {
		name   string
		exact  bool
		labels map[string]string
		want   float64
	}{
		{"r", true, map[string]string{"outcome": "ok", "reason": ""}, 3},
		{"r", true, map[string]string{"outcome": "refused"}, -1}, // labels must match exactly
		{"r", false, map[string]string{"outcome": "refused"}, 3},
		{"r", false, nil, 6},
		{"g", true, map[string]string{}, 7},
		{"h", true, nil, 4},
		{"absent", true, nil, -1},
		{"absent", false, nil, -1},
	} {
		got := fams.Sum(c.name, c.labels)
		if c.exact {
			got = fams.Value(c.name, c.labels)
		}
		if got != c.want {
			t.Errorf("%s %v (exact %v) = %v, want %v", c.name, c.labels, c.exact, got, c.want)
		}
	}
}
