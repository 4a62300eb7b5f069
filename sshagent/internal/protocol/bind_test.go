package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/sshagent/internal/sessionbind"
)

func hostSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func bindMsg(t testing.TB, host ssh.Signer, sid []byte, fwd bool) []byte {
	t.Helper()
	sig, err := host.Sign(rand.Reader, sid)
	if err != nil {
		t.Fatal(err)
	}
	return sessionbind.Message(sessionbind.Marshal(host.PublicKey(), sid, sig, fwd))
}

// TestSessionBind: a verified binding is SUCCESS, a forged one FAILURE; a
// bound (non-forwarding) connection cannot be re-bound; forwarding hops may
// add bindings; the session keeps serving afterwards.
func TestSessionBind(t *testing.T) {
	f := newFixture(t)
	h1, h2 := hostSigner(t), hostSigner(t)
	sid := bytes.Repeat([]byte{3}, 32)
	forged := func() []byte {
		sig, _ := h2.Sign(rand.Reader, sid)
		return sessionbind.Message(sessionbind.Marshal(h1.PublicKey(), sid, sig, false))
	}()
	unknownExt := append([]byte{MsgExtension}, 0, 0, 0, 3, 'f', 'o', 'o')

	steps := []struct {
		name string
		msg  []byte
		want byte
	}{
		{"forged signature", forged, MsgFailure},
		{"unknown extension", unknownExt, MsgFailure},
		{"forwarding hop", bindMsg(t, h1, sid, true), MsgSuccess},
		{"final hop", bindMsg(t, h2, bytes.Repeat([]byte{4}, 32), false), MsgSuccess},
		{"re-bind after final hop", bindMsg(t, h1, sid, false), MsgFailure},
		{"still serving", []byte{MsgRequestIdentities}, MsgIdentitiesAnswer},
	}
	c, _ := serve(t, f.agent, Limits{})
	for _, st := range steps {
		if got := raw(t, c, st.msg); len(got) == 0 || got[0] != st.want {
			t.Fatalf("%s: reply %v, want type %d", st.name, got, st.want)
		}
	}
}

func TestSessionBindLimit(t *testing.T) {
	f := newFixture(t)
	h := hostSigner(t)
	var s Session
	for i := range MaxBinds + 1 {
		sid := bytes.Repeat([]byte{byte(i + 1)}, 32)
		want := byte(MsgSuccess)
		if i == MaxBinds {
			want = MsgFailure
		}
		if got := s.handle(f.agent, bindMsg(t, h, sid, true)); got[0] != want {
			t.Fatalf("bind %d: reply %v, want %d", i, got, want)
		}
	}
	if len(s.Binds) != MaxBinds {
		t.Fatalf("kept %d bindings", len(s.Binds))
	}
}
