package metrics

import (
	"testing"
	"time"
)

// TestNilRecordsNothing: a nil *Metrics (metrics off) is safe everywhere
// the agent calls it.
func TestNilRecordsNothing(t *testing.T) {
	var m *Metrics
	m.Sign("ok", "", time.Millisecond)
	m.Sign("refused", "no-key", 0)
	m.Refuse("unknown-token")
	m.Lookup("found")
	m.Conn(1)
}
