package wire

import (
	"bytes"
	"testing"
)

func TestReadString(t *testing.T) {
	for _, c := range []struct {
		name   string
		in     []byte
		s, rst []byte
		ok     bool
	}{
		{"empty", nil, nil, nil, false},
		{"short prefix", []byte{0, 0, 1}, nil, nil, false},
		{"length past the end", []byte{0, 0, 0, 5, 'a'}, nil, nil, false},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 'a'}, nil, nil, false},
		{"zero length", []byte{0, 0, 0, 0, 'x'}, []byte{}, []byte("x"), true},
		{"exact", AppendString(nil, []byte("abc")), []byte("abc"), []byte{}, true},
	} {
		s, rest, ok := ReadString(c.in)
		if ok != c.ok || !bytes.Equal(s, c.s) || !bytes.Equal(rest, c.rst) {
			t.Errorf("%s: ReadString = %q, %q, %v", c.name, s, rest, ok)
		}
	}
}

func FuzzReadString(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 'a', 'b'})
	f.Fuzz(func(t *testing.T, p []byte) {
		s, rest, ok := ReadString(p)
		if !ok {
			return
		}
		if got := AppendString(nil, s); !bytes.Equal(append(got, rest...), p) {
			t.Fatalf("round trip of %x lost bytes", p)
		}
	})
}
