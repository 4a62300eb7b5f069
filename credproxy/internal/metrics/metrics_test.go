package metrics

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

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

// TestNilRecordsNothing: a nil *Metrics (metrics off) is safe everywhere
// the proxy calls it.
func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Request("ok", "", 1, 2, time.Millisecond)
	m.Lookup("found")
	m.Refresh(true)
	m.InFlight(1)
	m.ConnState(&net.TCPConn{}, http.StateNew)
}
