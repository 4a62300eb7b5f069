package scope

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in      string
		want    Rule
		wantErr string
	}{
		{in: "GET /v1/models", want: Rule{Methods: []string{"GET"}, Path: "/v1/models"}},
		{in: "GET,POST /v1/messages/**", want: Rule{Methods: []string{"GET", "POST"}, Path: "/v1/messages/**"}},
		{in: "  * /v1/*  ", want: Rule{Methods: []string{"*"}, Path: "/v1/*"}},
		{in: "", wantErr: `is not "METHODS PATH"`},
		{in: "GET", wantErr: `is not "METHODS PATH"`},
		{in: "/v1/models", wantErr: `is not "METHODS PATH"`},
		{in: "get /v1/models", wantErr: `method "get" is not an upper-case HTTP method`},
		{in: "GET, /v1", wantErr: "has an empty method"},
		{in: "GET v1/models", wantErr: "does not start with /"},
		{in: "GET /v1/../admin", wantErr: "dot segment"},
		{in: "GET /v1/mod*", wantErr: "'*' must be a whole segment"},
		{in: "GET /v1/%2e", wantErr: "has ';', '%'"},
	}
	for _, tt := range tests {
		got, err := ParseRule(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "example:") {
				t.Errorf("ParseRule(%q) error = %v, want it to contain %q and an example", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRule(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseRule: a rule that parses compiles (New accepts it) and prints
// back to a string that parses to the same rule; nothing panics.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"GET /v1/models", "GET,POST /v1/**", "* /", "GET  /a", "GET /a b", ",/", "GET\t/x", "G /\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		if _, err := New([]Rule{r}, nil); err != nil {
			t.Fatalf("ParseRule(%q) = %+v, which New refuses: %v", s, r, err)
		}
		again, err := ParseRule(strings.Join(r.Methods, ",") + " " + r.Path)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", s, again, err, r)
		}
	})
}
