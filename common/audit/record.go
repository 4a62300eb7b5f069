// Package audit writes and reads the daemons' audit records: one JSON object
// per line, never a secret, never a body (docs/audit.md).
package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the record format version written in member v.
const Version = 1

// Record is one audit event. Fields holds the channel-specific members, which
// MarshalJSON flattens next to the common members (common members win).
type Record struct {
	V           int            `json:"v"`
	Time        time.Time      `json:"time"`
	Channel     string         `json:"channel"`
	Event       string         `json:"event"`
	Outcome     string         `json:"outcome"`
	Reason      string         `json:"reason,omitempty"`
	Project     string         `json:"project,omitempty"`
	Task        string         `json:"task,omitempty"`
	Container   string         `json:"container,omitempty"`
	TokenPrefix string         `json:"token_prefix,omitempty"`
	Fields      map[string]any `json:"-"`
}

type common Record // without the methods, so encoding/json does not recurse

var commonNames = map[string]bool{
	"v": true, "time": true, "channel": true, "event": true, "outcome": true,
	"reason": true, "project": true, "task": true, "container": true, "token_prefix": true,
}

// MarshalJSON writes the common members and the Fields in one flat object.
func (r Record) MarshalJSON() ([]byte, error) {
	c := common(r)
	c.Time = c.Time.UTC()
	base, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if len(r.Fields) == 0 {
		return base, nil
	}
	m := map[string]any{}
	for k, v := range r.Fields {
		if !commonNames[k] {
			m[k] = v
		}
	}
	var cm map[string]json.RawMessage
	if err := json.Unmarshal(base, &cm); err != nil {
		return nil, err
	}
	for k, v := range cm {
		m[k] = v
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a flat object in one pass over the line: the object is
// split into raw members once and each member is decoded from its own bytes,
// so a reader of a large audit file pays one scan per line, not one per view
// of it. Members that are not common go to Fields. Common members match by
// exact name (docs/audit.md, Common members (format version 1)), unlike
// encoding/json's case-insensitive struct matching: "Channel" is a field.
func (r *Record) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	var out Record
	// Map order is random: when several members are bad, the one reported is
	// the first by name, so the same line always gives the same error.
	var firstErr error
	firstKey := ""
	for k, v := range raw {
		var err error
		switch k {
		case "v":
			err = decodeInt(v, &out.V)
		case "time":
			err = out.Time.UnmarshalJSON(v)
		case "channel":
			err = decodeString(v, &out.Channel)
		case "event":
			err = decodeString(v, &out.Event)
		case "outcome":
			err = decodeString(v, &out.Outcome)
		case "reason":
			err = decodeString(v, &out.Reason)
		case "project":
			err = decodeString(v, &out.Project)
		case "task":
			err = decodeString(v, &out.Task)
		case "container":
			err = decodeString(v, &out.Container)
		case "token_prefix":
			err = decodeString(v, &out.TokenPrefix)
		default:
			var fv any
			fv, err = decodeAny(v)
			if err == nil {
				if out.Fields == nil {
					out.Fields = make(map[string]any, len(raw))
				}
				out.Fields[k] = fv
			}
		}
		if err != nil && (firstErr == nil || k < firstKey) {
			firstErr, firstKey = err, k
		}
	}
	if firstErr != nil {
		return fmt.Errorf("member %q: %w", firstKey, firstErr)
	}
	*r = out
	return nil
}

// The decoders below take raw values json.Unmarshal has already validated,
// so they only convert; each falls back to encoding/json for what its fast
// path does not cover (escapes, invalid UTF-8, nested values), which keeps
// the results identical to encoding/json's.

func decodeInt(v json.RawMessage, dst *int) error {
	if string(v) == "null" {
		return nil
	}
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return fmt.Errorf("%s is not a number", v)
	}
	n, err := strconv.ParseInt(string(v), 10, 0)
	if err != nil {
		return fmt.Errorf("%s is not an int", v)
	}
	*dst = int(n)
	return nil
}

func decodeString(v json.RawMessage, dst *string) error {
	if string(v) == "null" {
		return nil
	}
	if s, ok := plainString(v); ok {
		*dst = s
		return nil
	}
	return json.Unmarshal(v, dst)
}

// plainString returns the text of a quoted JSON string that needs no
// unescaping and no UTF-8 repair.
func plainString(v json.RawMessage) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	in := v[1 : len(v)-1]
	if bytes.IndexByte(in, '\\') >= 0 || !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

func decodeAny(v json.RawMessage) (any, error) {
	switch {
	case len(v) == 0:
		return nil, fmt.Errorf("empty value")
	case string(v) == "null":
		return nil, nil
	case string(v) == "true":
		return true, nil
	case string(v) == "false":
		return false, nil
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9'):
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, fmt.Errorf("number %s: %w", v, err)
		}
		return f, nil
	}
	if s, ok := plainString(v); ok {
		return s, nil
	}
	var out any
	err := json.Unmarshal(v, &out)
	return out, err
}

// ParseLine parses one line of an audit file and checks the required members.
func ParseLine(line []byte) (Record, error) {
	var r Record
	// UnmarshalJSON directly: json.Unmarshal(line, &r) would validate the
	// whole line once more before handing it over.
	if err := r.UnmarshalJSON(line); err != nil {
		return Record{}, fmt.Errorf("audit record: %w", err)
	}
	if r.V < 1 || r.Channel == "" || r.Event == "" || r.Outcome == "" || r.Time.IsZero() {
		return Record{}, fmt.Errorf("audit record: missing v, time, channel, event or outcome")
	}
	return r, nil
}

// TokenPrefix returns the first 12 characters of a token, the only part of
// a token an audit record may hold.
func TokenPrefix(tok string) string {
	r := []rune(tok)
	if len(r) > 12 {
		r = r[:12]
	}
	return string(r)
}

// Printable is s safe to show on a terminal: C0 and C1 control characters
// and DEL become '?'. Records carry values a hostile task chose (names,
// refs, paths), and a reader must not let them move the cursor or rewrite
// the screen.
func Printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
