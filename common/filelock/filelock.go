// Package filelock takes advisory flock(2) locks, the locking protocol every
// reader and writer of the shared files agrees on (docs/formats.md, Conventions).
package filelock

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Lock is a held flock on an open file. Close releases it.
type Lock struct {
	f *os.File
}

// Exclusive opens (creating it 0600 with its parent directories) the lock file
// at path and blocks until it holds LOCK_EX on it.
func Exclusive(path string) (*Lock, error) {
	return lockPath(path, syscall.LOCK_EX)
}

// Shared is Exclusive with LOCK_SH.
func Shared(path string) (*Lock, error) {
	return lockPath(path, syscall.LOCK_SH)
}

func lockPath(path string, how int) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := Flock(f, how); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Flock applies flock(2) to an already open file, retrying on EINTR.
func Flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// File returns the locked file, for protocols that lock the data file itself.
func (l *Lock) File() *os.File { return l.f }

// Close releases the lock by closing the descriptor.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Wrap takes ownership of an open file already holding a flock.
func Wrap(f *os.File) *Lock { return &Lock{f: f} }
