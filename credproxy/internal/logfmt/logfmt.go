// Package logfmt builds the credential proxy's logger for --log-format
// (docs/credential-proxy.md, Operating it): text and json are log/slog's handlers
// with the field names every daemon uses (project, task, token_prefix,
// remote) and no timestamp of their own under systemd's journal; classic is
// the line format of the earlier proxy (internal/logline).
package logfmt

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"terok.dev/sandbox/credproxy/internal/logline"
)

// Formats names the accepted --log-format values.
const Formats = "text, json or classic"

// Parse checks a --log-format value; "" is text.
func Parse(s string) (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "", "text":
		return "text", nil
	case "json", "classic":
		return v, nil
	}
	return "", fmt.Errorf("--log-format %q: use %s (example: --log-format=json)", s, Formats)
}

// New returns the logger of format (Parse's result) at level, named
// logger. journal (stderr is systemd's journal: $JOURNAL_STREAM set and no
// --log-file) drops the time from text and json records; the journal
// stamps them itself.
func New(w io.Writer, format, logger string, level slog.Level, journal bool) *slog.Logger {
	if format == "classic" {
		return slog.New(logline.New(w, logger, level))
	}
	o := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.TimeKey:
			if journal {
				return slog.Attr{}
			}
		case slog.LevelKey:
			// The levels' names as --log-level spells them.
			if l, ok := a.Value.Any().(slog.Level); ok {
				a.Value = slog.StringValue(logline.LevelName(l))
			}
		}
		return a
	}}
	var h slog.Handler = slog.NewTextHandler(w, o)
	if format == "json" {
		h = slog.NewJSONHandler(w, o)
	}
	return slog.New(h).With("logger", logger)
}
