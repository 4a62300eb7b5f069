package names

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// podmanRule is podman's container-name pattern; Validate must agree with it
// on every name within the length bound.
var podmanRule = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		ok     bool
		reason string
	}{
		{"a", true, ""},
		{"0", true, ""},
		{"myproj-task-42", true, ""},
		{"A.b_c-d", true, ""},
		{"x..y", true, ""},
		{"x.", true, ""},
		{strings.Repeat("a", MaxLen), true, ""},
		{"", false, "it is empty"},
		{".", false, "starts with '.'"},
		{"..", false, "starts with '.'"},
		{"../../x", false, "contains '/'"},
		{"a/b", false, "contains '/'"},
		{"/abs", false, "contains '/'"},
		{"-rm", false, "starts with '-'"},
		{"--name=x", false, "starts with '-'"},
		{".hidden", false, "starts with '.'"},
		{"_x", false, "starts with '_'"},
		{"a\x00b", false, "NUL"},
		{"a b", false, "contains ' '"},
		{"a\nb", false, `contains '\n'`},
		{"naïve", false, "contains 'ï'"},
		{"a:b", false, "contains ':'"},
		{"a\\b", false, `contains '\\'`},
		{"\xff", false, "contains"},
		{strings.Repeat("a", MaxLen+1), false, "129 bytes long"},
	}
	for _, c := range cases {
		for _, kind := range []Kind{ContainerName, ProjectID, TaskID} {
			err := Validate(kind, c.name)
			if (err == nil) != c.ok {
				t.Fatalf("Validate(%v, %q) = %v, want ok=%v", kind, c.name, err, c.ok)
			}
			if len(c.name) <= MaxLen && podmanRule.MatchString(c.name) != c.ok {
				t.Fatalf("%q: table disagrees with podman's rule", c.name)
			}
			if c.ok {
				continue
			}
			var ne *Error
			if !errors.As(err, &ne) || ne.Kind != kind || ne.Name != c.name {
				t.Fatalf("%q: error %#v", c.name, err)
			}
			msg := err.Error()
			for _, want := range []string{"invalid " + kind.String(), c.reason, "e.g. \"" + kind.example() + "\""} {
				if !strings.Contains(msg, want) {
					t.Errorf("%v %q: message %q lacks %q", kind, c.name, msg, want)
				}
			}
			if Validate(kind, kind.example()) != nil {
				t.Errorf("the example %q of %v is itself invalid", kind.example(), kind)
			}
		}
	}
}

func TestWrappers(t *testing.T) {
	for _, f := range []struct {
		fn   func(string) error
		kind Kind
	}{{ValidateContainerName, ContainerName}, {ValidateProjectID, ProjectID}, {ValidateTaskID, TaskID}} {
		if err := f.fn("ok-1"); err != nil {
			t.Fatal(err)
		}
		var ne *Error
		if err := f.fn("../x"); !errors.As(err, &ne) || ne.Kind != f.kind {
			t.Fatalf("%v: %v", f.kind, err)
		}
	}
}

// A huge rejected name is not repeated in full.
func TestErrorBoundsTheEcho(t *testing.T) {
	long := strings.Repeat("é", 10000)
	if msg := ValidateTaskID(long).Error(); len(msg) > 400 || !strings.Contains(msg, "...") {
		t.Fatalf("message of %d bytes: %.200s", len(msg), msg)
	}
}

// FuzzValidate: whatever validates is a safe single path component and a
// name podman accepts.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"a", "myproj-task-42", "", ".", "..", "../../x", "a/b", "-x", ".x", "a\x00", "x..", strings.Repeat("z", 129)} {
		f.Add(s)
	}
	base := filepath.Join(string(filepath.Separator), "state", "tasks")
	f.Fuzz(func(t *testing.T, name string) {
		err := Validate(TaskID, name)
		if len(name) <= MaxLen && (err == nil) != podmanRule.MatchString(name) {
			t.Fatalf("%q: Validate %v disagrees with podman's rule", name, err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty message")
			}
			return
		}
		if len(name) == 0 || len(name) > MaxLen {
			t.Fatalf("%q: length %d accepted", name, len(name))
		}
		if strings.ContainsAny(name, "/\x00") || name[0] == '-' || name[0] == '.' {
			t.Fatalf("%q accepted", name)
		}
		p := filepath.Join(base, name)
		if filepath.Dir(p) != base || filepath.Base(p) != name {
			t.Fatalf("%q: Join gives %q, not a direct child of %s", name, p, base)
		}
		if ValidateContainerName(name) != nil || ValidateProjectID(name) != nil {
			t.Fatalf("%q: kinds disagree", name)
		}
	})
}

// TestLowerHex: LowerHex agrees with the regexps it replaced.
func TestLowerHex(t *testing.T) {
	for _, tc := range []struct {
		s        string
		min, max int
		want     bool
	}{
		{"0123456789ab", 12, 12, true},
		{"0123456789abc", 12, 12, false},
		{"0123456789a", 12, 12, false},
		{"0123456789aB", 12, 12, false},
		{"0123456789ag", 12, 12, false},
		{"deadbeef", 8, 64, true},
		{"deadbee", 8, 64, false},
		{strings.Repeat("f", 64), 8, 64, true},
		{strings.Repeat("f", 65), 8, 64, false},
		{"", 0, 4, true},
		{"dead beef", 8, 64, false},
		{"deadbeef\n", 8, 64, false},
	} {
		if got := LowerHex(tc.s, tc.min, tc.max); got != tc.want {
			t.Errorf("LowerHex(%q, %d, %d) = %v, want %v", tc.s, tc.min, tc.max, got, tc.want)
		}
	}
}

// FuzzLowerHex compares LowerHex with the regexp `^[0-9a-f]{8,64}$`.
func FuzzLowerHex(f *testing.F) {
	re := regexp.MustCompile(`^[0-9a-f]{8,64}$`)
	for _, s := range []string{"deadbeef", "DEADBEEF", strings.Repeat("a", 64), "0123456\n8", "ü1234567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := LowerHex(s, 8, 64), re.MatchString(s); got != want {
			t.Fatalf("LowerHex(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
