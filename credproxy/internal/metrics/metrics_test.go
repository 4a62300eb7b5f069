package metrics

import (
	"net"
	"net/http"
	"testing"
	"time"
)

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
