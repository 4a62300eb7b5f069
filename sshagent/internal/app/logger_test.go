package app

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLogFormats(t *testing.T) {
	tests := []struct {
		format  string
		journal bool
		check   func(t *testing.T, line string)
	}{
		{"text", false, func(t *testing.T, l string) {
			if !strings.HasPrefix(l, "time=") || !strings.Contains(l, "project=p1") {
				t.Errorf("text line %q", l)
			}
		}},
		{"text", true, func(t *testing.T, l string) {
			if strings.Contains(l, "time=") || !strings.HasPrefix(l, "level=INFO") {
				t.Errorf("journal text line %q", l)
			}
		}},
		{"json", false, func(t *testing.T, l string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("json line %q: %v", l, err)
			}
			if m["time"] == nil || m["project"] != "p1" || m["logger"] != Program {
				t.Errorf("json members %v", m)
			}
		}},
		{"json", true, func(t *testing.T, l string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("json line %q: %v", l, err)
			}
			if _, ok := m["time"]; ok || m["task"] != "t1" {
				t.Errorf("journal json members %v", m)
			}
		}},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		newLogger(&buf, slog.LevelInfo, tc.format, tc.journal).Info("signed", "project", "p1", "task", "t1")
		tc.check(t, strings.TrimSpace(buf.String()))
	}
}

func TestParseLogFormat(t *testing.T) {
	for in, want := range map[string]string{"": "text", "TEXT": "text", " json ": "json"} {
		if got, err := ParseLogFormat(in); err != nil || got != want {
			t.Errorf("ParseLogFormat(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseLogFormat("xml"); err == nil {
		t.Error("xml accepted")
	}
}
