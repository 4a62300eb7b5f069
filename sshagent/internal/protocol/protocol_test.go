package protocol

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/restricted"
	"terok.dev/sandbox/sshagent/internal/testkeys"
	"terok.dev/sandbox/sshagent/internal/wire"
)

type fixture struct {
	ed, rsa testkeys.Pair
	agent   *restricted.Agent
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{
		ed:  testkeys.New(t, dir, "ed", "ed25519", "tk-main:p", testkeys.OpenSSH),
		rsa: testkeys.New(t, dir, "rsa", "rsa2048", "tk-side:p:rsa", testkeys.PKCS1),
	}
	var ks []keys.Key
	for _, p := range []testkeys.Pair{f.ed, f.rsa} {
		k, err := keys.LoadPair(p.Private, p.Public)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	f.agent = restricted.New(ks, nil)
	return f
}

// serve runs a session on one end of a pipe and returns the other end and
// the session's result.
func serve(t *testing.T, a *restricted.Agent, lim Limits) (net.Conn, <-chan error) {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(s, a, lim); s.Close() }()
	t.Cleanup(func() { c.Close() })
	return c, done
}

func TestClientListAndSign(t *testing.T) {
	f := newFixture(t)
	c, _ := serve(t, f.agent, Limits{})
	cl := agent.NewClient(c)
	ids, err := cl.List()
	if err != nil || len(ids) != 2 || ids[0].Comment != "tk-main:p" || ids[1].Comment != "tk-side:p:rsa" {
		t.Fatalf("List = %v, %v", ids, err)
	}
	data := []byte("session data")
	cases := []struct {
		key   ssh.PublicKey
		flags agent.SignatureFlags
		algo  string
	}{
		{f.ed.Signer.PublicKey(), 0, ssh.KeyAlgoED25519},
		{f.ed.Signer.PublicKey(), agent.SignatureFlagRsaSha512, ssh.KeyAlgoED25519},
		{f.rsa.Signer.PublicKey(), 0, ssh.KeyAlgoRSA},
		{f.rsa.Signer.PublicKey(), agent.SignatureFlagRsaSha256, ssh.KeyAlgoRSASHA256},
		{f.rsa.Signer.PublicKey(), agent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
		{f.rsa.Signer.PublicKey(), agent.SignatureFlagRsaSha256 | agent.SignatureFlagRsaSha512, ssh.KeyAlgoRSASHA512},
	}
	for _, tc := range cases {
		sig, err := cl.SignWithFlags(tc.key, data, tc.flags)
		if err != nil {
			t.Fatalf("%s flags %d: %v", tc.key.Type(), tc.flags, err)
		}
		if sig.Format != tc.algo {
			t.Fatalf("%s flags %d: algorithm %s, want %s", tc.key.Type(), tc.flags, sig.Format, tc.algo)
		}
		if err := tc.key.Verify(data, sig); err != nil {
			t.Fatalf("%s flags %d: signature does not verify: %v", tc.key.Type(), tc.flags, err)
		}
	}
}

func TestClientRefusals(t *testing.T) {
	f := newFixture(t)
	c, _ := serve(t, f.agent, Limits{})
	cl := agent.NewClient(c)
	_, foreign, _ := ed25519.GenerateKey(rand.Reader)
	fs, _ := ssh.NewSignerFromKey(foreign)
	if _, err := cl.Sign(fs.PublicKey(), []byte("x")); err == nil {
		t.Fatal("signed with a foreign key")
	}
	if err := cl.Add(agent.AddedKey{PrivateKey: foreign}); err == nil {
		t.Fatal("add accepted")
	}
	if err := cl.Remove(f.ed.Signer.PublicKey()); err == nil {
		t.Fatal("remove accepted")
	}
	if err := cl.RemoveAll(); err == nil {
		t.Fatal("remove all accepted")
	}
	if err := cl.Lock([]byte("pw")); err == nil {
		t.Fatal("lock accepted")
	}
	if err := cl.Unlock([]byte("pw")); err == nil {
		t.Fatal("unlock accepted")
	}
	if _, err := cl.Extension("session-bind@openssh.com", nil); err == nil {
		t.Fatal("extension accepted")
	}
	// The session is still usable after all that.
	if ids, err := cl.List(); err != nil || len(ids) != 2 {
		t.Fatalf("List after refusals = %v, %v", ids, err)
	}
}

func raw(t *testing.T, c net.Conn, msg []byte) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(wire.AppendString(nil, msg)); err != nil {
		t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return body
}

func TestRawMessages(t *testing.T) {
	f := newFixture(t)
	c, _ := serve(t, f.agent, Limits{})
	blob := f.ed.Signer.PublicKey().Marshal()
	signReq := func(b, data []byte, flags uint32) []byte {
		m := wire.AppendString([]byte{MsgSignRequest}, b)
		m = wire.AppendString(m, data)
		return binary.BigEndian.AppendUint32(m, flags)
	}
	failure := []byte{MsgFailure}
	cases := []struct {
		name string
		msg  []byte
		want func([]byte) bool
	}{
		{"SSH1 remove all is FAILURE, not SUCCESS", []byte{9}, eq(failure)},
		{"SSH1 identities", []byte{1}, eq(failure)},
		{"add identity", []byte{17, 0, 0, 0, 0}, eq(failure)},
		{"unknown type", []byte{200, 1, 2, 3}, eq(failure)},
		{"truncated sign", []byte{MsgSignRequest, 0, 0}, eq(failure)},
		{"overrunning blob length", []byte{MsgSignRequest, 0xff, 0xff, 0xff, 0xff, 1}, eq(failure)},
		{"missing flags", signReq(blob, []byte("d"), 0)[:len(signReq(blob, []byte("d"), 0))-2], eq(failure)},
		{"unknown key", signReq([]byte("garbage"), []byte("d"), 0), eq(failure)},
		{"valid sign", signReq(blob, []byte("d"), 0), func(b []byte) bool { return b[0] == MsgSignResponse }},
		{"valid sign with trailing bytes", append(signReq(blob, []byte("d"), 0), 1, 2), func(b []byte) bool { return b[0] == MsgSignResponse }},
		{"identities", []byte{MsgRequestIdentities}, func(b []byte) bool {
			return b[0] == MsgIdentitiesAnswer && binary.BigEndian.Uint32(b[1:]) == 2
		}},
	}
	for _, tc := range cases {
		if got := raw(t, c, tc.msg); !tc.want(got) {
			t.Fatalf("%s: reply %v", tc.name, got)
		}
	}
}

func eq(want []byte) func([]byte) bool { return func(b []byte) bool { return bytes.Equal(b, want) } }

func TestFrameLimitsCloseSession(t *testing.T) {
	f := newFixture(t)
	for _, n := range []uint32{0, MaxMessage + 1, 0xffffffff} {
		c, done := serve(t, f.agent, Limits{})
		go c.Write(binary.BigEndian.AppendUint32(nil, n))
		if err := <-done; !errors.Is(err, ErrFrame) {
			t.Fatalf("length %d: err = %v", n, err)
		}
		// Nothing was answered: the next read sees the close.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("length %d: read after violation: %v", n, err)
		}
	}
	// The largest allowed frame is served (FAILURE for an unknown type).
	c, _ := serve(t, f.agent, Limits{})
	big := make([]byte, MaxMessage)
	big[0] = 250
	if got := raw(t, c, big); !bytes.Equal(got, []byte{MsgFailure}) {
		t.Fatalf("max frame reply %v", got)
	}
}

func TestTimeouts(t *testing.T) {
	f := newFixture(t)
	// Idle between frames.
	_, done := serve(t, f.agent, Limits{Idle: 50 * time.Millisecond})
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle: %v", err)
	}
	// A frame that stalls after its header.
	c, done := serve(t, f.agent, Limits{Idle: time.Minute, BodyTimeout: 50 * time.Millisecond})
	go c.Write([]byte{0, 0, 0, 10, MsgRequestIdentities})
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("body: %v", err)
	}
	// A clean close between frames is not an error.
	c, done = serve(t, f.agent, Limits{})
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("clean close: %v", err)
	}
}

func FuzzParseSignRequest(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 'k', 0, 0, 0, 1, 'd', 0, 0, 0, 4})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		blob, data, _, err := ParseSignRequest(p)
		if err != nil {
			return
		}
		if len(blob)+len(data)+12 > len(p) {
			t.Fatalf("parsed more than the input holds")
		}
	})
}

// FuzzServe feeds arbitrary client bytes to a session: it must never panic,
// and must answer only within the protocol.
func FuzzServe(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, MsgRequestIdentities})
	f.Add([]byte{0, 0, 0, 5, MsgSignRequest, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 9, 0, 0, 0, 1, 17})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	dir := f.TempDir()
	p := testkeys.New(f, dir, "ed", "ed25519", "tk-main:p", testkeys.OpenSSH)
	k, err := keys.LoadPair(p.Private, p.Public)
	if err != nil {
		f.Fatal(err)
	}
	a := restricted.New([]keys.Key{k}, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		c := &memConn{r: bytes.NewReader(in), w: &out}
		_ = Serve(c, a, Limits{})
		// Every reply is a well-formed frame of a known type.
		rest := out.Bytes()
		for len(rest) > 0 {
			if len(rest) < 5 {
				t.Fatalf("short reply frame %v", rest)
			}
			n := binary.BigEndian.Uint32(rest)
			if int(n)+4 > len(rest) || n == 0 {
				t.Fatalf("bad reply length %d", n)
			}
			switch rest[4] {
			case MsgFailure, MsgIdentitiesAnswer, MsgSignResponse:
			default:
				t.Fatalf("unexpected reply type %d", rest[4])
			}
			rest = rest[4+n:]
		}
	})
}

type memConn struct {
	r io.Reader
	w io.Writer
}

func (m *memConn) Read(p []byte) (int, error)       { return m.r.Read(p) }
func (m *memConn) Write(p []byte) (int, error)      { return m.w.Write(p) }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }
