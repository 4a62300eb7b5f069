// Package rundebug is the runner library's best-effort debug log
// (docs/config.md, Other locations): append-only lines
// `[YYYY-MM-DD HH:MM:SS] LEVEL: message` in local time, levels DEBUG and
// WARNING. Writing never fails the caller: errors are ignored by design, as
// the log is a diagnostic aid, not a record anything depends on. Callers
// never pass secrets (tokens only through tokenid.Show, commands redacted).
package rundebug

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Log appends to one file. The zero value (empty path) discards.
type Log struct {
	path string
	now  func() time.Time
}

// New returns a log appending to path (config.Env.RunnerDebugLog()).
func New(path string) *Log { return &Log{path: path, now: time.Now} }

// Path is the log file.
func (l *Log) Path() string {
	if l == nil {
		return ""
	}
	return l.path
}

// Debug writes a DEBUG line.
func (l *Log) Debug(format string, a ...any) { l.write("DEBUG", format, a...) }

// Warning writes a WARNING line.
func (l *Log) Warning(format string, a ...any) { l.write("WARNING", format, a...) }

func (l *Log) write(level, format string, a ...any) {
	if l == nil || l.path == "" {
		return
	}
	msg := fmt.Sprintf(format, a...)
	// One record per line: a message must not forge further records.
	msg = strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg)
	line := fmt.Sprintf("[%s] %s: %s\n", l.now().Format("2006-01-02 15:04:05"), level, msg)
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return
	}
	// O_APPEND keeps concurrent writers' lines whole (each is one write).
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	_, _ = f.WriteString(line)
	_ = f.Close()
}
