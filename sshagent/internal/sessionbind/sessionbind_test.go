package sessionbind

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/sshagent/internal/wire"
)

func signer(t testing.TB, kind string) ssh.Signer {
	t.Helper()
	var priv any
	switch kind {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv = k
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if kind == "rsa" {
		as, err := ssh.NewSignerWithAlgorithms(s.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA256})
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	return s
}

func bindFor(t testing.TB, s ssh.Signer, sid []byte, fwd bool) []byte {
	t.Helper()
	sig, err := s.Sign(rand.Reader, sid)
	if err != nil {
		t.Fatal(err)
	}
	return Marshal(s.PublicKey(), sid, sig, fwd)
}

func TestParse(t *testing.T) {
	ed, rs, other := signer(t, "ed25519"), signer(t, "rsa"), signer(t, "ed25519")
	sid := bytes.Repeat([]byte{7}, 32)
	good := bindFor(t, ed, sid, false)
	otherSig, _ := other.Sign(rand.Reader, sid)
	wrongKey := Marshal(ed.PublicKey(), sid, otherSig, false)
	edSig, _ := ed.Sign(rand.Reader, sid)
	wrongSID := Marshal(ed.PublicKey(), bytes.Repeat([]byte{8}, 32), edSig, false)
	bigSig, _ := ed.Sign(rand.Reader, make([]byte, MaxSessionID+1))
	tests := []struct {
		name    string
		in      []byte
		want    error
		fwd     bool
		keyFrom ssh.Signer
	}{
		{"ed25519", good, nil, false, ed},
		{"rsa-sha2-256", bindFor(t, rs, sid, false), nil, false, rs},
		{"forwarding", bindFor(t, ed, sid, true), nil, true, ed},
		{"other key's signature", wrongKey, ErrSignature, false, nil},
		{"signature over another session", wrongSID, ErrSignature, false, nil},
		{"empty", nil, ErrMalformed, false, nil},
		{"truncated", good[:len(good)-1], ErrMalformed, false, nil},
		{"trailing byte", append(append([]byte(nil), good...), 0), ErrMalformed, false, nil},
		{"oversized session id", Marshal(ed.PublicKey(), make([]byte, MaxSessionID+1), bigSig, false), ErrMalformed, false, nil},
		{"empty session id", Marshal(ed.PublicKey(), nil, edSig, false), ErrMalformed, false, nil},
		{"garbage host key", append(wire.AppendString(nil, []byte("nope")), good[4+len(ed.PublicKey().Marshal()):]...), ErrMalformed, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Parse(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if b.Forwarding != tc.fwd {
				t.Errorf("forwarding = %v", b.Forwarding)
			}
			if want := ssh.FingerprintSHA256(tc.keyFrom.PublicKey()); b.Fingerprint != want {
				t.Errorf("fingerprint = %s, want %s", b.Fingerprint, want)
			}
			if !bytes.Equal(b.SessionID, sid) {
				t.Errorf("session id not kept")
			}
		})
	}
}

func TestParseExtension(t *testing.T) {
	msg := Message([]byte("xyz"))
	if msg[0] != MsgExtension {
		t.Fatalf("type %d", msg[0])
	}
	name, rest, err := ParseExtension(msg[1:])
	if err != nil || name != Name || string(rest) != "xyz" {
		t.Fatalf("got %q %q %v", name, rest, err)
	}
	if _, _, err := ParseExtension([]byte{0, 0, 0, 9, 'a'}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("overrunning name: %v", err)
	}
}

// FuzzParse: untrusted agent clients send this message; Parse must never
// panic, and whatever it accepts is a verified, bounded binding.
func FuzzParse(f *testing.F) {
	s := signer(f, "ed25519")
	f.Add(bindFor(f, s, bytes.Repeat([]byte{1}, 32), false))
	f.Add(bindFor(f, s, bytes.Repeat([]byte{2}, 64), true))
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := Parse(p)
		if err != nil {
			return
		}
		if b.HostKey == nil || len(b.SessionID) == 0 || len(b.SessionID) > MaxSessionID {
			t.Fatalf("accepted an invalid binding: %+v", b)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	s := signer(b, "ed25519")
	msg := bindFor(b, s, bytes.Repeat([]byte{1}, 32), false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}
