package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	r := newRateLog(log, time.Second)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		r.Warn(log, "a", "flood")
	}
	r.Warn(log, "b", "other")
	now = now.Add(1500 * time.Millisecond)
	r.Warn(log, "a", "flood")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("lines:\n%s", buf.String())
	}
	if strings.Contains(lines[0], "suppressed") || !strings.Contains(lines[1], "msg=other") ||
		!strings.Contains(lines[2], "suppressed_since_last=4") {
		t.Fatalf("lines:\n%s", buf.String())
	}
}
