// Package jsonobj reads and writes JSON objects with their member order kept,
// which the shared files need: a rewrite keeps existing entries in their
// original order and appends new ones (docs/formats.md, Gate tokens file).
package jsonobj

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Member is one key/value of an object, the value still raw.
type Member struct {
	Key   string
	Value json.RawMessage
}

// ErrNotObject is returned when valid JSON holds something other than an object.
var ErrNotObject = errors.New("top-level JSON value is not an object")

// Parse decodes data as one JSON object and returns its members in order.
// Invalid JSON returns a syntax error; other valid JSON returns ErrNotObject.
// A key repeated in the input keeps its first position and its last value,
// like encoding/json does for maps.
func Parse(data []byte) ([]Member, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, ErrNotObject
	}
	var out []Member
	index := map[string]int{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := kt.(string)
		if !ok {
			return nil, fmt.Errorf("object key is %T, not a string", kt)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		if i, seen := index[key]; seen {
			out[i].Value = raw
			continue
		}
		index[key] = len(out)
		out = append(out, Member{Key: key, Value: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON object")
	}
	return out, nil
}

// Marshal renders members as an object with 2-space indentation and a
// trailing newline, the house style of the shared files.
func Marshal(members []Member) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n  ")
		k, err := json.Marshal(m.Key)
		if err != nil {
			return nil, err
		}
		buf.Write(k)
		buf.WriteString(": ")
		var v bytes.Buffer
		if err := json.Indent(&v, m.Value, "  ", "  "); err != nil {
			return nil, fmt.Errorf("member %q: %w", m.Key, err)
		}
		buf.Write(v.Bytes())
	}
	if len(members) > 0 {
		buf.WriteByte('\n')
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}
