// Package logline is the slog handler behind the daemons' log format
// (docs/credential-proxy.md, Operating it): "<YYYY-MM-DD HH:MM:SS,mmm> <logger> <LEVEL> <message>",
// followed by the record's attributes as key=value pairs so operators get
// the context without a second format to parse.
package logline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LevelCritical is the CRITICAL level of the spec's level names.
const LevelCritical = slog.LevelError + 4

// ParseLevel maps DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL,
// case-insensitively; anything else is INFO (docs/credential-proxy.md, Operating it).
func ParseLevel(s string) slog.Level {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug
	case "WARNING", "WARN":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	case "CRITICAL":
		return LevelCritical
	}
	return slog.LevelInfo
}

// LevelName is the spec's name for l.
func LevelName(l slog.Level) string {
	switch {
	case l >= LevelCritical:
		return "CRITICAL"
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}

// Handler writes one line per record. Handlers derived through WithAttrs and
// WithGroup share the writer and its mutex, so lines never interleave.
type Handler struct {
	mu     *sync.Mutex
	w      io.Writer
	logger string
	level  slog.Leveler
	prefix string // pre-rendered attributes from WithAttrs
	group  string
	now    func() time.Time
}

// New returns a handler writing lines named logger to w at level and above.
func New(w io.Writer, logger string, level slog.Leveler) *Handler {
	return &Handler{mu: &sync.Mutex{}, w: w, logger: logger, level: level, now: time.Now}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// Handle implements slog.Handler.
func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	t := r.Time
	if t.IsZero() {
		t = h.now()
	}
	var b strings.Builder
	b.WriteString(t.Format("2006-01-02 15:04:05"))
	b.WriteByte(',')
	fmt.Fprintf(&b, "%03d", t.Nanosecond()/1e6)
	b.WriteByte(' ')
	b.WriteString(h.logger)
	b.WriteByte(' ')
	b.WriteString(LevelName(r.Level))
	b.WriteByte(' ')
	b.WriteString(oneLine(r.Message))
	b.WriteString(h.prefix)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	for _, a := range as {
		appendAttr(&b, h.group, a)
	}
	c := *h
	c.prefix += b.String()
	return &c
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	if c.group != "" {
		c.group += "."
	}
	c.group += name
	return &c
}

func appendAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			appendAttr(b, key, g)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('=')
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\"=\r\n") {
		v = strconv.Quote(v)
	}
	b.WriteString(v)
}

// oneLine keeps a message on its line: a line break in a message (e.g. an
// upstream error body) could otherwise forge a log line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
