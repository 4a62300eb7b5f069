package shieldbundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// The decider protocol of interactive mode (docs/shield.md, Interactive
// decider protocol): the resident helper listens on FileDeciderSocket in
// the container's shield state directory (mode 0600, every peer's uid
// checked); `terok-sandbox shield interactive` connects and is sent one
// Held line per held connection, and answers each with one Decision line.
// Both directions are one JSON object per line, at most MaxDeciderLine
// octets with the newline.
const (
	FileDeciderSocket = "interactive.sock"
	MaxDeciderLine    = 1024
	// FileDecideTimeout optionally holds how long a held connection waits
	// for its answer (a Go duration, e.g. "30s"); DefaultDecideTimeout
	// when missing, MinDecideTimeout..MaxDecideTimeout.
	FileDecideTimeout = "decide.timeout"
)

// Bounds of the decision timeout.
const (
	DefaultDecideTimeout = 30 * time.Second
	MinDecideTimeout     = 100 * time.Millisecond
	MaxDecideTimeout     = 10 * time.Minute
)

// ParseDecideTimeout validates a decision timeout ("" is the default).
func ParseDecideTimeout(v string) (time.Duration, error) {
	if v == "" {
		return DefaultDecideTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("decision timeout: %w", err)
	}
	if d < MinDecideTimeout || d > MaxDecideTimeout {
		return 0, fmt.Errorf("decision timeout %s: out of %v..%v", truncateForMsg(v), MinDecideTimeout, MaxDecideTimeout)
	}
	return d, nil
}

// ReadDecideTimeout reads FileDecideTimeout in stateDir; an unparsable or
// out-of-bounds value is an error (the operator asked for something else).
func ReadDecideTimeout(stateDir string) (time.Duration, error) {
	v, err := ReadValue(filepath.Join(stateDir, FileDecideTimeout))
	if err != nil {
		return 0, err
	}
	d, err := ParseDecideTimeout(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", FileDecideTimeout, err)
	}
	return d, nil
}

// Verdicts a decider may answer.
const (
	VerdictOnce   = "once"   // accept this connection only
	VerdictAlways = "always" // accept, and allow the address like `shield allow`
	VerdictRefuse = "refuse"
)

// Held is one held connection, as the helper shows it to the decider.
type Held struct {
	// ID is the helper's number for this question, echoed in the Decision.
	ID    uint64 `json:"id"`
	Proto string `json:"proto"`
	Dst   string `json:"dst"`
	Port  uint16 `json:"port,omitempty"`
	// Name is the name that last resolved to Dst in this container, if
	// any. It comes from a DNS answer: a display must not trust it.
	Name string `json:"name,omitempty"`
	// TimeoutMS is how long the helper waits for the answer before it
	// refuses.
	TimeoutMS int64 `json:"timeout_ms"`
}

// Decision is a decider's answer to one Held.
type Decision struct {
	ID      uint64 `json:"id"`
	Verdict string `json:"verdict"`
}

// DeciderError is what the helper sends instead of questions when it
// refuses a decider (e.g. another one is attached), before it closes.
type DeciderError struct {
	Error string `json:"error"`
}

// MarshalLine renders v as one protocol line (with its newline).
func MarshalLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b)+1 > MaxDeciderLine {
		return nil, fmt.Errorf("decider line of %d octets over %d", len(b)+1, MaxDeciderLine)
	}
	return append(b, '\n'), nil
}

// strictLine decodes one line into v: exactly one JSON object, no unknown
// field, nothing after it.
func strictLine(line []byte, v any) error {
	if len(line) > MaxDeciderLine {
		return fmt.Errorf("line of %d octets over %d", len(line), MaxDeciderLine)
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	if bytes.ContainsAny(line, "\n\r") {
		return errors.New("not one line")
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

// ParseDecision reads one decider line; anything but a known verdict for a
// non-zero id is an error.
func ParseDecision(line []byte) (Decision, error) {
	var d Decision
	if err := strictLine(line, &d); err != nil {
		return Decision{}, fmt.Errorf("decision: %w", err)
	}
	switch {
	case d.ID == 0:
		return Decision{}, errors.New("decision: id missing")
	case d.Verdict != VerdictOnce && d.Verdict != VerdictAlways && d.Verdict != VerdictRefuse:
		return Decision{}, fmt.Errorf("decision: unknown verdict %q", truncateForMsg(d.Verdict))
	}
	return d, nil
}

// ParseHeld reads one helper line: a Held, or the helper's DeciderError
// (returned as an error).
func ParseHeld(line []byte) (Held, error) {
	if strings.HasPrefix(string(line), `{"error":`) {
		var e DeciderError
		if err := strictLine(line, &e); err == nil {
			return Held{}, fmt.Errorf("helper refused the decider: %s", truncateForMsg(e.Error))
		}
	}
	var h Held
	if err := strictLine(line, &h); err != nil {
		return Held{}, fmt.Errorf("held connection: %w", err)
	}
	if h.ID == 0 || h.Proto == "" || h.TimeoutMS <= 0 {
		return Held{}, errors.New("held connection: id, proto or timeout_ms missing")
	}
	if a, err := netip.ParseAddr(h.Dst); err != nil || a.Zone() != "" {
		return Held{}, fmt.Errorf("held connection: bad destination %q", truncateForMsg(h.Dst))
	}
	return h, nil
}
