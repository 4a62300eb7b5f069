package pktline

import (
	"strconv"
	"testing"
)

func TestLen(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0000", 0, true},
		{"0001", 1, true},
		{"0004", 4, true},
		{"000a", 10, true},
		{"00A0", 160, true},
		{"fff0", 65520, true},
		{"FFFF", 65535, true},
		{"00g0", 0, false},
		{"-001", 0, false},
		{"00 1", 0, false},
		{"+001", 0, false},
	} {
		n, ok := Len([]byte(tc.in))
		if n != tc.want || ok != tc.ok {
			t.Errorf("Len(%q) = %d, %v; want %d, %v", tc.in, n, ok, tc.want, tc.ok)
		}
	}
}

// FuzzLen checks Len against strconv.ParseUint for every 4-byte header.
func FuzzLen(f *testing.F) {
	for _, s := range []string{"0000", "0004", "fff0", "FFFF", "00g0", "+001"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		if len(h) != 4 {
			return
		}
		n, ok := Len(h)
		hex := true
		for _, c := range h {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				hex = false
			}
		}
		if ok != hex {
			t.Fatalf("Len(%q) ok = %v, want %v", h, ok, hex)
		}
		if !ok {
			if n != 0 {
				t.Fatalf("Len(%q) = %d on failure, want 0", h, n)
			}
			return
		}
		want, err := strconv.ParseUint(string(h), 16, 32)
		if err != nil || int(want) != n {
			t.Fatalf("Len(%q) = %d, want %d (%v)", h, n, want, err)
		}
	})
}
