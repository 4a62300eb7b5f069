package logfmt

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"terok.dev/sandbox/credproxy/internal/logline"
)

func TestFormats(t *testing.T) {
	for _, c := range []struct {
		format  string
		journal bool
		check   func(t *testing.T, line string)
	}{
		{"text", false, func(t *testing.T, l string) {
			if !strings.HasPrefix(l, "time=") || !strings.Contains(l, `level=WARNING msg="Request refused" logger=terok-credential-proxy project=demo task=t1 token_prefix=terok-p-abcd`) {
				t.Errorf("text: %q", l)
			}
		}},
		{"text", true, func(t *testing.T, l string) {
			if strings.Contains(l, "time=") || !strings.HasPrefix(l, "level=WARNING ") {
				t.Errorf("text under the journal: %q", l)
			}
		}},
		{"json", true, func(t *testing.T, l string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("json: %v %q", err, l)
			}
			if _, ok := m["time"]; ok || m["level"] != "WARNING" || m["project"] != "demo" || m["token_prefix"] != "terok-p-abcd" || m["logger"] != "terok-credential-proxy" {
				t.Errorf("json: %v", m)
			}
		}},
		{"classic", true, func(t *testing.T, l string) {
			if !strings.Contains(l, " terok-credential-proxy WARNING Request refused project=demo") {
				t.Errorf("classic: %q", l)
			}
		}},
	} {
		var b bytes.Buffer
		log := New(&b, c.format, "terok-credential-proxy", slog.LevelInfo, c.journal)
		log.Debug("hidden")
		log.Warn("Request refused", "project", "demo", "task", "t1", "token_prefix", "terok-p-abcd")
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("%s: %d lines: %q", c.format, len(lines), b.String())
		}
		c.check(t, lines[0])
	}
	var b bytes.Buffer
	New(&b, "text", "p", logline.LevelCritical, false).Log(t.Context(), logline.LevelCritical, "boom")
	if !strings.Contains(b.String(), "level=CRITICAL") {
		t.Errorf("critical: %q", b.String())
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]string{"": "text", "text": "text", "JSON": "json", "classic": "classic"} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := Parse("xml"); err == nil || !strings.Contains(err.Error(), "example") {
		t.Errorf("Parse(xml): %v", err)
	}
}
