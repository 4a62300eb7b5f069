package shieldbundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"terok.dev/sandbox/common/filelock"
)

// Audit actions (docs/shield.md, Audit log).
const (
	ActionSetup      = "setup"
	ActionAllowed    = "allowed"
	ActionDenied     = "denied"
	ActionShieldUp   = "shield_up"
	ActionShieldDown = "shield_down"
)

// AuditTimeFormat is the ts format: UTC, seconds, explicit +00:00.
const AuditTimeFormat = "2006-01-02T15:04:05+00:00"

// Event is one audit.jsonl line (docs/formats.md, Shield audit log). Field order is
// the on-disk key order.
type Event struct {
	TS        string `json:"ts"`
	Container string `json:"container"`
	Action    string `json:"action"`
	Dest      string `json:"dest,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// maxAuditLine bounds one encoded event; a longer detail is truncated.
const maxAuditLine = 4096

// AppendAudit appends ev to <stateDir>/audit.jsonl as one compact JSON line
// (ts filled with the current UTC time when empty). Callers decide whether
// auditing is enabled and treat an error as a warning (docs/formats.md, Shield audit log).
func AppendAudit(stateDir string, ev Event) error {
	if ev.TS == "" {
		ev.TS = time.Now().UTC().Format(AuditTimeFormat)
	}
	if ev.Container == "" || ev.Action == "" {
		return fmt.Errorf("audit event needs container and action")
	}
	if len(ev.Detail) > maxAuditLine {
		ev.Detail = ev.Detail[:maxAuditLine]
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil { // Encode appends the newline
		return fmt.Errorf("encode audit event: %w", err)
	}
	path := filepath.Join(stateDir, FileAudit)
	l, err := filelock.Exclusive(filepath.Join(stateDir, lockFile))
	if err != nil {
		return err
	}
	defer l.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|noFollow, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("append audit log %s: %w", path, err)
	}
	return nil
}

// TailAudit returns the last n parseable events of <stateDir>/audit.jsonl
// (n ≤ 0 → none; missing file → none). Lines that are not valid JSON
// objects are skipped.
func TailAudit(stateDir string, n int) ([]Event, error) {
	if n <= 0 {
		return nil, nil
	}
	data, err := readBounded(filepath.Join(stateDir, FileAudit))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Event
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		var ev Event
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		out = append(out, ev)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}
