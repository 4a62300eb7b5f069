package app

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	gsyslog "terok.dev/sandbox/gate/internal/syslog"
)

// FallbackLogName is the file a detached gate logs to, inside its base
// path, when it has neither --log-file nor a syslog socket (docs/gate.md,
// Logs): a gate is never silent.
const FallbackLogName = "terok-gate.log"

// parseLevel reads --log-level; "warning" is accepted as the proxy spells it.
func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// logger builds the gate's slog logger (docs/gate.md, Logs): --log-file if
// given; else the journal or stderr in the foreground modes, syslog when
// detached, and the fallback file in the base path when a detached gate has
// no syslog. Lines carry no timestamp where the receiver stamps them
// (syslog, or stderr under systemd: JOURNAL_STREAM set).
func (o options) logger(stderr io.Writer, m mode) (*slog.Logger, func(), error) {
	level, _ := parseLevel(o.logLevel)
	if o.accessLog && level > slog.LevelInfo {
		level = slog.LevelInfo // --access-log lines are info
	}
	var (
		w       io.Writer = stderr
		closeFn           = func() {}
		noTime  bool
		note    string
	)
	openFile := func(path string) error {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("open log file %s: %w", path, err)
		}
		w, closeFn = f, func() { _ = f.Close() }
		return nil
	}
	switch {
	case o.logFile != "":
		if err := openFile(o.logFile); err != nil {
			return nil, nil, err
		}
	case m == modeDetached:
		sw, err := gsyslog.Dial(o.syslogSocket, "terok-gate")
		if err == nil {
			w, closeFn, noTime = sw, func() { _ = sw.Close() }, true
			break
		}
		path := filepath.Join(o.basePath, FallbackLogName)
		if ferr := openFile(path); ferr != nil {
			return nil, nil, fmt.Errorf("no syslog at %s (%v) and %w; pass --log-file=PATH", o.syslogSocket, err, ferr)
		}
		note = fmt.Sprintf("no syslog at %s (%v): logging to %s; pass --log-file=PATH to choose the file", o.syslogSocket, err, path)
	default:
		noTime = os.Getenv("JOURNAL_STREAM") != ""
	}
	hopt := &slog.HandlerOptions{Level: level}
	if noTime {
		hopt.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	var h slog.Handler
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(w, hopt)
	} else {
		h = slog.NewTextHandler(w, hopt)
	}
	log := slog.New(h)
	if note != "" {
		log.Warn(note)
	}
	return log, closeFn, nil
}
