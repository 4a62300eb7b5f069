package logline

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"testing"
	"time"
)

func TestFormat(t *testing.T) {
	var b bytes.Buffer
	l := slog.New(New(&b, "terok-credential-proxy", ParseLevel("warning")))
	l.Info("hidden")
	l.Warn("Upstream failed\nforged line", "provider", "claude", "error", "a b")
	l.With("k", "v").WithGroup("g").Error("x", "n", 3)
	l.Log(context.Background(), LevelCritical, "boom")
	re := regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} terok-credential-proxy WARNING Upstream failed\\nforged line provider=claude error="a b"\n` +
		`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} terok-credential-proxy ERROR x k=v g.n=3\n` +
		`\S+ \S+ terok-credential-proxy CRITICAL boom\n$`)
	if !re.MatchString(b.String()) {
		t.Errorf("log:\n%s", b.String())
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"DEBUG": slog.LevelDebug, "info": slog.LevelInfo, "Warning": slog.LevelWarn,
		"WARN": slog.LevelWarn, "error": slog.LevelError, "critical": LevelCritical, "bogus": slog.LevelInfo, "": slog.LevelInfo} {
		if got := ParseLevel(in); got != want {
			t.Errorf("ParseLevel(%q) = %v", in, got)
		}
	}
	h := New(&bytes.Buffer{}, "x", slog.LevelInfo)
	r := slog.NewRecord(time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC), slog.LevelInfo, "m", 0)
	var b bytes.Buffer
	h.w = &b
	_ = h.Handle(context.Background(), r)
	if b.String() != "2026-01-02 03:04:05,006 x INFO m\n" {
		t.Errorf("%q", b.String())
	}
}
