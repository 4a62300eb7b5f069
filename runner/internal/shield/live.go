package shield

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// Live states (docs/shield-hook.md, Verification and states).
const (
	StateInactive = string(ruleset.StateInactive)
	StateUp       = string(ruleset.StateUp)
	StateLearn    = string(ruleset.StateLearn)
	StateDown     = string(ruleset.StateDown)
	StateDownAll  = string(ruleset.StateDownAll)
	StateError    = string(ruleset.StateError)
)

// stateDir is the resolved state directory of this shield.
func (s *Shield) stateDir() (string, error) {
	d, err := resolveDir(s.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("resolve shield state directory %s: %w", s.cfg.StateDir, err)
	}
	st, err := os.Stat(d)
	if err != nil || !st.IsDir() {
		return "", fmt.Errorf("shield state directory %s does not exist: was the container started with the shield?", d)
	}
	return d, nil
}

func (s *Shield) path(dir, name string) string { return filepath.Join(dir, name) }

func readTrim(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

func (s *Shield) tier(dir string) string { return readTrim(s.path(dir, shieldbundle.FileDNSTier)) }

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// State classifies the live ruleset (docs/shield-hook.md, Verification and states); never fails.
func (s *Shield) State(ctx context.Context, container string) string {
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return StateInactive
	}
	return string(ruleset.Classify(s.liveTable(ctx, pid)))
}

// Rules is the live table text ("" when there is none).
func (s *Shield) Rules(ctx context.Context, container string) string {
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return ""
	}
	return s.liveTable(ctx, pid)
}

// AuditTail returns the last n audit events of this container's state dir.
func (s *Shield) AuditTail(n int) ([]shieldbundle.Event, error) {
	dir, err := s.stateDir()
	if err != nil {
		return nil, err
	}
	return shieldbundle.TailAudit(dir, n)
}
