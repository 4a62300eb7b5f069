package resolver

import (
	"errors"
	"testing"
)

// TestOpenNeedsBypassTable: resolver.open opens the resolver only while the
// live table is the bypass table; an enforcing or unreadable table keeps
// it closed.
func TestOpenNeedsBypassTable(t *testing.T) {
	for _, c := range []struct {
		name   string
		marker bool
		bypass bool
		err    error
		want   bool
	}{
		{"marker under bypass table", true, true, nil, true},
		{"marker under enforcing table", true, false, nil, false},
		{"marker, table unreadable", true, true, errors.New("netlink"), false},
		{"no marker under bypass table", false, true, nil, false},
		{"no marker, enforcing", false, false, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := testResolver(t, []string{"listed.test"}, false)
			r.bypass = func() (bool, error) { return c.bypass, c.err }
			if got := r.openWith(c.marker); got != c.want {
				t.Fatalf("openWith(%v) = %v, want %v", c.marker, got, c.want)
			}
		})
	}
}
