package jsonobj

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseKeepsOrder(t *testing.T) {
	m, err := Parse([]byte(`{"b": 1, "a": {"x": [1, 2]}, "c": null, "b": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[0].Key != "b" || string(m[0].Value) != "3" || m[1].Key != "a" || m[2].Key != "c" {
		t.Fatalf("got %+v", m)
	}
	out, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"b\": 3,\n  \"a\": {\n    \"x\": [\n      1,\n      2\n    ]\n  },\n  \"c\": null\n}\n"
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
	if out, _ := Marshal(nil); string(out) != "{}\n" {
		t.Errorf("empty = %q", out)
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{``, `{`, `[1]`, `"x"`, `{"a":1} {}`, `{"a":1}x`} {
		if _, err := Parse([]byte(s)); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	if _, err := Parse([]byte(`[1]`)); !errors.Is(err, ErrNotObject) {
		t.Errorf("array: %v", err)
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte(`{"a": 1, "b": [true, {"c": "d"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		out, err := Marshal(m)
		if err != nil {
			t.Fatalf("Marshal of parsed input failed: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("Marshal produced invalid JSON: %q", out)
		}
		m2, err := Parse(out)
		if err != nil || len(m2) != len(m) {
			t.Fatalf("round trip changed members: %v", err)
		}
	})
}
