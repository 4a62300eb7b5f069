package protocol

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/sshagent/internal/destination"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/restricted"
	"terok.dev/sandbox/sshagent/internal/testkeys"
	"terok.dev/sandbox/sshagent/internal/wire"
)

// userauth is the data an OpenSSH client signs to log in (RFC 4252 section 7).
func userauth(sid, keyBlob []byte, method string, hostKey []byte) []byte {
	out := wire.AppendString(nil, sid)
	out = append(out, destination.MsgUserAuthRequest)
	out = wire.AppendString(out, []byte("root"))
	out = wire.AppendString(out, []byte("ssh-connection"))
	out = wire.AppendString(out, []byte(method))
	out = append(out, 1)
	out = wire.AppendString(out, []byte(ssh.KeyAlgoED25519))
	out = wire.AppendString(out, keyBlob)
	if hostKey != nil {
		out = wire.AppendString(out, hostKey)
	}
	return out
}

func signMsg(blob, data []byte) []byte {
	m := wire.AppendString([]byte{MsgSignRequest}, blob)
	m = wire.AppendString(m, data)
	return binary.BigEndian.AppendUint32(m, 0)
}

// destKey loads an Ed25519 key bound to the host keys given.
func destKey(t testing.TB, allowed ...ssh.PublicKey) keys.Key {
	t.Helper()
	p := testkeys.New(t, t.TempDir(), "d", "ed25519", "tk-main:d", testkeys.OpenSSH)
	k, err := keys.LoadPair(p.Private, p.Public)
	if err != nil {
		t.Fatal(err)
	}
	var ds []string
	for _, a := range allowed {
		ds = append(ds, ssh.FingerprintSHA256(a))
	}
	k.Dest = destination.Resolve(ds, nil)
	return k
}

// TestDestinationBound: a destination-bound key signs only the user
// authentication of the session the connection is bound to, to an allowed
// host key, never through a forwarding hop; an unrestricted key signs as
// before (docs/ssh-agent.md, Destination-bound keys).
func TestDestinationBound(t *testing.T) {
	allowed, other := hostSigner(t), hostSigner(t)
	k := destKey(t, allowed.PublicKey())
	sid, sid2 := bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{8}, 32)
	hk := allowed.PublicKey().Marshal()
	cases := []struct {
		name  string
		binds [][]byte
		data  []byte
		ok    bool
	}{
		{"unbound", nil, userauth(sid, k.Blob, destination.MethodPublicKey, nil), false},
		{"bound to the allowed host", [][]byte{bindMsg(t, allowed, sid, false)}, userauth(sid, k.Blob, destination.MethodPublicKey, nil), true},
		{"hostbound method", [][]byte{bindMsg(t, allowed, sid, false)}, userauth(sid, k.Blob, destination.MethodHostbound, hk), true},
		{"hostbound names another host key", [][]byte{bindMsg(t, allowed, sid, false)}, userauth(sid, k.Blob, destination.MethodHostbound, other.PublicKey().Marshal()), false},
		{"bound to another host", [][]byte{bindMsg(t, other, sid, false)}, userauth(sid, k.Blob, destination.MethodPublicKey, nil), false},
		{"another session's request", [][]byte{bindMsg(t, allowed, sid, false)}, userauth(sid2, k.Blob, destination.MethodPublicKey, nil), false},
		{"request names another key", [][]byte{bindMsg(t, allowed, sid, false)}, userauth(sid, hk, destination.MethodPublicKey, nil), false},
		{"not a user authentication", [][]byte{bindMsg(t, allowed, sid, false)}, []byte("SSHSIG data"), false},
		{"trailing bytes", [][]byte{bindMsg(t, allowed, sid, false)}, append(userauth(sid, k.Blob, destination.MethodPublicKey, nil), 0), false},
		{"forwarded", [][]byte{bindMsg(t, allowed, sid2, true), bindMsg(t, allowed, sid, false)}, userauth(sid, k.Blob, destination.MethodPublicKey, nil), false},
		{"forwarding hop itself", [][]byte{bindMsg(t, allowed, sid, true)}, userauth(sid, k.Blob, destination.MethodPublicKey, nil), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := restricted.New([]keys.Key{k}, nil)
			var s Session
			for _, b := range c.binds {
				if r := s.handle(a, b); r[0] != MsgSuccess {
					t.Fatalf("bind refused: %v", r)
				}
			}
			r := s.handle(a, signMsg(k.Blob, c.data))
			if got := r[0] == MsgSignResponse; got != c.ok {
				t.Fatalf("signed = %v, want %v", got, c.ok)
			}
			// The same key without destinations signs in every case.
			u := k
			u.Dest = nil
			a = restricted.New([]keys.Key{u}, nil)
			if r := s.handle(a, signMsg(u.Blob, c.data)); r[0] != MsgSignResponse {
				t.Fatalf("unrestricted key refused")
			}
		})
	}
	// Through the x/crypto interface there is no session: refused.
	a := restricted.New([]keys.Key{k}, nil)
	if _, err := a.Sign(k.Signer.PublicKey(), userauth(sid, k.Blob, destination.MethodPublicKey, nil)); err == nil {
		t.Fatal("destination-bound key signed without a session")
	}
}

// BenchmarkSignBound: signatures per second on one bound connection of an
// Ed25519 key with destinations (the user authentication data parsed and
// checked) against the same key without (issue 14: signatures/s with
// binding vs without). The two alternate within each iteration, so the
// load of a shared machine hits both alike. Metrics: unbound-sig/s,
// bound-sig/s and ratio = bound/unbound.
func BenchmarkSignBound(b *testing.B) {
	host := hostSigner(b)
	sid := bytes.Repeat([]byte{7}, 32)
	k := destKey(b, host.PublicKey())
	data := userauth(sid, k.Blob, destination.MethodHostbound, host.PublicKey().Marshal())
	free := k
	free.Dest = nil
	type side struct {
		a   *restricted.Agent
		s   Session
		msg []byte
		d   time.Duration
	}
	sides := []*side{{a: restricted.New([]keys.Key{k}, nil)}, {a: restricted.New([]keys.Key{free}, nil)}}
	for _, sd := range sides {
		if r := sd.s.handle(sd.a, bindMsg(b, host, sid, false)); r[0] != MsgSuccess {
			b.Fatal("bind")
		}
		sd.msg = signMsg(k.Blob, data)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, sd := range sides {
			start := time.Now()
			if r := sd.s.handle(sd.a, sd.msg); r[0] != MsgSignResponse {
				b.Fatal("refused")
			}
			sd.d += time.Since(start)
		}
	}
	bo, un := float64(b.N)/sides[0].d.Seconds(), float64(b.N)/sides[1].d.Seconds()
	b.ReportMetric(un, "unbound-sig/s")
	b.ReportMetric(bo, "bound-sig/s")
	b.ReportMetric(bo/un, "ratio")
}

// BenchmarkCheck is the destination check alone (what a bound key adds to
// each signature).
func BenchmarkCheck(b *testing.B) {
	host := hostSigner(b)
	sid := bytes.Repeat([]byte{7}, 32)
	k := destKey(b, host.PublicKey())
	data := userauth(sid, k.Blob, destination.MethodHostbound, host.PublicKey().Marshal())
	var s Session
	if r := s.handle(restricted.New([]keys.Key{k}, nil), bindMsg(b, host, sid, false)); r[0] != MsgSuccess {
		b.Fatal("bind")
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if reason, _ := destination.Check(k.Dest, s.Binds, k.Blob, data); reason != "" {
			b.Fatal(reason)
		}
	}
}
