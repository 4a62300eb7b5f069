package resolver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Log bounds (docs/shield-resolver.md, Logs). A container that floods the
// resolver with refused names costs at most twice logMaxBytes of disk
// (dns.log and one rotation dns.log.1) and logRate lines a second.
const (
	logMaxBytes = 1 << 20
	logRate     = 20  // lines per second, sustained
	logBurst    = 100 // lines at once after a quiet spell
)

// boundedLog is the resolver's log file: appends with O_NOFOLLOW (a
// symlink planted in the state directory must not redirect a privileged
// write), rotation to path.1 when the next line would pass max bytes, and
// a token bucket that drops lines over the rate and reports how many were
// dropped with the next line that gets through.
type boundedLog struct {
	mu         sync.Mutex
	path       string
	max        int64
	f          *os.File
	size       int64
	tokens     float64
	last       time.Time
	suppressed int
	logger     *slog.Logger
	now        func() time.Time
}

func openBoundedLog(path string, max int64) (*boundedLog, error) {
	l := &boundedLog{path: path, max: max, tokens: logBurst, now: time.Now}
	if err := l.open(false); err != nil {
		return nil, err
	}
	l.last = l.now()
	l.logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return l, nil
}

func (l *boundedLog) open(truncate bool) error {
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_NONBLOCK
	if truncate {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(l.path, flags, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		return fmt.Errorf("%s is not a regular file", l.path)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Write is the slog handler's output: one call per record. It is called
// with l.mu held (through log), so it only handles size and rotation.
func (l *boundedLog) Write(p []byte) (int, error) {
	if l.f == nil {
		return 0, errors.New("log closed")
	}
	if l.size+int64(len(p)) > l.max {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

func (l *boundedLog) rotate() error {
	_ = l.f.Close()
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate %s: %w", l.path, err)
	}
	return l.open(true)
}

// allow takes one token from the bucket.
func (l *boundedLog) allow() bool {
	now := l.now()
	l.tokens += now.Sub(l.last).Seconds() * logRate
	if l.tokens > logBurst {
		l.tokens = logBurst
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// log writes one record unless the rate limit drops it.
func (l *boundedLog) log(level slog.Level, msg string, attrs ...slog.Attr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.allow() {
		l.suppressed++
		return
	}
	if l.suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed_before", l.suppressed))
		l.suppressed = 0
	}
	l.logger.LogAttrs(context.Background(), level, msg, attrs...)
}

func (l *boundedLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}
