package handshake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

type bufConn struct{ io.Reader }

func (bufConn) SetReadDeadline(time.Time) error { return nil }

func frame(n uint32, body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, n)
	return append(b, body...)
}

func TestRead(t *testing.T) {
	tok := "terok-p-0123456789abcdef0123456789abcdef"
	cases := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
	}{
		{"valid", frame(uint32(len(tok)), tok), tok, nil},
		{"valid with trailing agent bytes", append(frame(uint32(len(tok)), tok), 0, 0, 0, 1, 11), tok, nil},
		{"max length", frame(MaxTokenLen, strings.Repeat("a", MaxTokenLen)), strings.Repeat("a", MaxTokenLen), nil},
		{"zero length", frame(0, ""), "", ErrLength},
		{"too long", frame(MaxTokenLen+1, strings.Repeat("a", MaxTokenLen+1)), "", ErrLength},
		{"huge length", frame(0xffffffff, "x"), "", ErrLength},
		{"short length", []byte{0, 0}, "", io.ErrUnexpectedEOF},
		{"empty", nil, "", io.EOF},
		{"truncated token", frame(10, "abc"), "", io.ErrUnexpectedEOF},
		{"control bytes", frame(3, "a\nb"), "", ErrEncoding},
		{"invalid utf8", frame(2, "\xff\xfe"), "", ErrEncoding},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Read(bufConn{bytes.NewReader(c.in)}, time.Second)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

// A peer that sends part of the handshake and stalls is cut off by the
// per-read deadline.
func TestReadTimeout(t *testing.T) {
	for _, sent := range [][]byte{nil, {0, 0}, frame(5, "ab")} {
		a, b := net.Pipe()
		go func() { b.Write(sent) }()
		_, err := Read(a, 50*time.Millisecond)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("sent %v: err = %v, want deadline exceeded", sent, err)
		}
		a.Close()
		b.Close()
	}
}

func TestEncode(t *testing.T) {
	b, err := Encode("tok")
	if err != nil || !bytes.Equal(b, frame(3, "tok")) {
		t.Fatalf("Encode = %v, %v", b, err)
	}
	for _, bad := range []string{"", strings.Repeat("a", MaxTokenLen+1)} {
		if _, err := Encode(bad); !errors.Is(err, ErrLength) {
			t.Fatalf("Encode(%d bytes) err = %v", len(bad), err)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add(frame(40, "terok-p-0123456789abcdef0123456789abcdef"))
	f.Add(frame(0, ""))
	f.Add(frame(2000, "x"))
	f.Add([]byte{0, 0, 0})
	f.Add(frame(2, "\xff\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := Read(bufConn{bytes.NewReader(in)}, time.Second)
		if err != nil {
			return
		}
		if len(tok) == 0 || len(tok) > MaxTokenLen {
			t.Fatalf("accepted token of length %d", len(tok))
		}
		enc, err := Encode(tok)
		if err != nil || !bytes.Equal(enc, in[:len(enc)]) {
			t.Fatalf("round trip mismatch")
		}
	})
}
