package metrics

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestNilRecordsNothing: a nil *Metrics (metrics off) is safe everywhere
// the gate calls it.
func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Request("clone", "ok", "", 1, 2, time.Millisecond)
	m.Lookup("found")
	m.Git(1)
	m.ConnState(&net.TCPConn{}, http.StateNew)
}
