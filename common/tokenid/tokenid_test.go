package tokenid

import (
	"strings"
	"testing"
)

func TestNewValidShow(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		tok, err := New(GatePrefix)
		if err != nil {
			t.Fatal(err)
		}
		if !Valid(GatePrefix, tok) || Valid(PhantomPrefix, tok) || seen[tok] {
			t.Fatalf("bad or repeated token %q", tok)
		}
		seen[tok] = true
		if s := Show(tok); strings.Contains(s, tok[12:]) || !strings.HasPrefix(s, "terok-g-") {
			t.Errorf("Show leaks: %q", s)
		}
	}
	for _, bad := range []string{"", "terok-g-", "terok-g-0123456789ABCDEF0123456789abcdef",
		"terok-g-0123456789abcdef0123456789abcde", "terok-g-0123456789abcdef0123456789abcdef0", "x-g-0123456789abcdef0123456789abcdef"} {
		if Valid(GatePrefix, bad) {
			t.Errorf("Valid(%q)", bad)
		}
	}
	if s := Show("sk-ant-real-secret"); strings.Contains(s, "sk-") {
		t.Errorf("Show leaks an unknown secret: %q", s)
	}
}
