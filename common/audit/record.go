// Package audit writes and reads the daemons' audit records: one JSON object
// per line, never a secret, never a body (docs/audit.md).
package audit

import (
	"encoding/json"
	"fmt"
	"time"
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

// UnmarshalJSON reads a flat object; members that are not common go to Fields.
func (r *Record) UnmarshalJSON(b []byte) error {
	var c common
	if err := json.Unmarshal(b, &c); err != nil {
		return err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	*r = Record(c)
	for k, v := range all {
		if commonNames[k] {
			continue
		}
		if r.Fields == nil {
			r.Fields = map[string]any{}
		}
		r.Fields[k] = v
	}
	return nil
}

// ParseLine parses one line of an audit file and checks the required members.
func ParseLine(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
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
