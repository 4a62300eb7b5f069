package server

import (
	"io"
	"testing"
	"time"
)

// TestHealth: the health handshake needs no token and gets "ok" from an
// agent whose database answers, "error database" once it does not; it never
// opens an agent session.
func TestHealth(t *testing.T) {
	e := start(t, Options{})
	ask := func() string {
		c := e.dial(t, HealthToken)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("health: %v", err)
		}
		return string(got)
	}
	if got := ask(); got != "ok\n" {
		t.Fatalf("health = %q, want ok", got)
	}
	e.db.Close()
	if got := ask(); got != "error database\n" {
		t.Fatalf("health with a closed database = %q", got)
	}
}
