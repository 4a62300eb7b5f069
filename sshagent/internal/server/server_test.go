package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/sshagent/internal/handshake"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/testkeys"
)

type env struct {
	addr       string
	db         *creddb.DB
	keysFile   string
	dir        string
	a1, a2, b1 testkeys.Pair
	tokA, tokB string
	tokOther   string
	logs       *testkit.Buffer
	srv        *Server
}

func start(t *testing.T, o Options) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), logs: &testkit.Buffer{}}
	var err error
	e.db, err = creddb.Open(filepath.Join(e.dir, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })
	e.keysFile = filepath.Join(e.dir, "ssh-keys.json")
	e.a1 = testkeys.New(t, e.dir, "a1", "ed25519", "tk-side:a:one", testkeys.OpenSSH)
	e.a2 = testkeys.New(t, e.dir, "a2", "ed25519", "tk-main:a", testkeys.OpenSSH)
	e.b1 = testkeys.New(t, e.dir, "b1", "ed25519", "tk-main:b", testkeys.OpenSSH)
	for _, r := range []struct {
		p    string
		pair testkeys.Pair
	}{{"a", e.a1}, {"a", e.a2}, {"b", e.b1}} {
		if err := sshkeys.Update(e.keysFile, sshkeys.Pair{Project: r.p, PrivateKey: r.pair.Private, PublicKey: r.pair.Public}); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	mk := func(project, provider string) string {
		tok, err := e.db.CreateToken(ctx, creddb.TokenSpec{Project: project, Task: "task1", Set: creddb.DefaultSet, Provider: provider})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	e.tokA, e.tokB, e.tokOther = mk("a", "ssh"), mk("b", "ssh"), mk("a", "claude")
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Tokens, o.Keys, o.Log = e.db, keys.NewStore(e.keysFile, log), log
	e.srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e.srv.Shutdown(ctx)
		cancel()
		if strings.Contains(e.logs.String(), "terok-p-") && strings.Contains(e.logs.String(), e.tokA[8:]) {
			t.Errorf("a token leaked into the logs")
		}
	})
	return e
}

func (e *env) dial(t *testing.T, tok string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if tok != "" {
		hello, err := handshake.Encode(tok)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// closedSilently asserts the server closes c without sending a byte.
func closedSilently(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || (!errors.Is(err, io.EOF) && !isReset(err)) {
		t.Fatalf("%s: read %d bytes, err %v; want silent close", what, n, err)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "connection reset") }

func comments(ids []*agent.Key) string {
	var out []string
	for _, k := range ids {
		out = append(out, k.Comment)
	}
	return strings.Join(out, ",")
}

func TestProjectIsolation(t *testing.T) {
	e := start(t, Options{})
	ca := agent.NewClient(e.dial(t, e.tokA))
	ids, err := ca.List()
	if err != nil || comments(ids) != "tk-main:a,tk-side:a:one" {
		t.Fatalf("A sees %q, %v", comments(ids), err)
	}
	if _, err := ca.Sign(e.b1.Signer.PublicKey(), []byte("x")); err == nil {
		t.Fatal("A's token signed with B's key")
	}
	sig, err := ca.Sign(e.a1.Signer.PublicKey(), []byte("x"))
	if err != nil || e.a1.Signer.PublicKey().Verify([]byte("x"), sig) != nil {
		t.Fatalf("A cannot sign with its own key: %v", err)
	}
	cb := agent.NewClient(e.dial(t, e.tokB))
	ids, err = cb.List()
	if err != nil || comments(ids) != "tk-main:b" {
		t.Fatalf("B sees %q, %v", comments(ids), err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `msg=signed`) || !strings.Contains(logs, `project=a`) || !strings.Contains(logs, `key=tk-side:a:one`) {
		t.Fatalf("signature not logged with project and key:\n%s", logs)
	}
}

func TestRefusedTokens(t *testing.T) {
	e := start(t, Options{})
	cases := []struct{ name, tok string }{
		{"other provider", e.tokOther},
		{"unknown token", "terok-p-00000000000000000000000000000000"},
		{"static marker", creddb.StaticMarker},
		{"not a token", "hello"},
	}
	for _, c := range cases {
		closedSilently(t, e.dial(t, c.tok), c.name)
	}
	// A revoked token stops working for new connections.
	if _, err := e.db.RevokeTokens(context.Background(), names.TaskRef{Project: "b", Task: "task1"}); err != nil {
		t.Fatal(err)
	}
	closedSilently(t, e.dial(t, e.tokB), "revoked")
	logs := e.logs.String()
	if strings.Contains(logs, creddb.StaticMarker) || strings.Contains(logs, e.tokOther) {
		t.Fatalf("a token appears in the logs:\n%s", logs)
	}
	if !strings.Contains(logs, "provider=claude") {
		t.Fatalf("wrong-provider refusal not logged:\n%s", logs)
	}
}

func TestNoKeysClosed(t *testing.T) {
	e := start(t, Options{})
	tok, err := e.db.CreateToken(context.Background(), creddb.TokenSpec{Project: "nokeys", Task: "t", Set: creddb.DefaultSet, Provider: "ssh"})
	if err != nil {
		t.Fatal(err)
	}
	closedSilently(t, e.dial(t, tok), "project without keys")
	if !strings.Contains(e.logs.String(), "ssh-keys.json") {
		t.Fatal("no-keys warning does not point to ssh-keys.json")
	}
}

func TestHostileHandshakes(t *testing.T) {
	e := start(t, Options{HandshakeTimeout: 200 * time.Millisecond})
	raw := func(b []byte) net.Conn {
		c := e.dial(t, "")
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedSilently(t, raw([]byte{0, 0, 0, 0}), "zero length")
	closedSilently(t, raw([]byte{0, 0, 4, 1}), "length 1025")
	closedSilently(t, raw([]byte{0xff, 0xff, 0xff, 0xff}), "huge length")
	closedSilently(t, raw([]byte{0, 0}), "truncated length (slow)")
	closedSilently(t, raw([]byte{0, 0, 0, 40, 't', 'e'}), "truncated token (slow)")
	closedSilently(t, e.dial(t, ""), "nothing sent")
	c := raw([]byte{0, 0, 0, 40})
	c.(*net.TCPConn).CloseWrite()
	closedSilently(t, c, "EOF in token")
}

func TestGarbageAfterHandshake(t *testing.T) {
	e := start(t, Options{})
	// Random bytes: most first words are oversized frame lengths → closed.
	c := e.dial(t, e.tokA)
	junk := make([]byte, 4096)
	rand.Read(junk)
	junk[0] = 0xf0
	c.Write(junk)
	closedSilently(t, c, "garbage frame")
	// An oversized agent message is refused before its body is read.
	c = e.dial(t, e.tokA)
	c.Write(binary.BigEndian.AppendUint32(nil, 256<<10+1))
	closedSilently(t, c, "oversized message")
	// A well-framed unknown request gets FAILURE and the session continues.
	c = e.dial(t, e.tokA)
	c.Write([]byte{0, 0, 0, 3, 99, 1, 2})
	reply := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, reply); err != nil || !bytes.Equal(reply, []byte{0, 0, 0, 1, 5}) {
		t.Fatalf("unknown request reply %v %v", reply, err)
	}
	if ids, err := agent.NewClient(c).List(); err != nil || len(ids) != 2 {
		t.Fatalf("session unusable after FAILURE: %v", err)
	}
}

func TestConcurrentSessions(t *testing.T) {
	e := start(t, Options{})
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = e.dial(t, e.tokA)
	}
	// All 100 are open at once; each lists and signs.
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			cl := agent.NewClient(c)
			ids, err := cl.List()
			if err != nil || len(ids) != 2 {
				errs <- errors.Join(errors.New("list"), err)
				return
			}
			pk, _ := ssh.ParsePublicKey(ids[0].Blob)
			sig, err := cl.Sign(pk, []byte("data"))
			if err != nil || pk.Verify([]byte("data"), sig) != nil {
				errs <- errors.Join(errors.New("sign"), err)
			}
		}(conns[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestConnectionLimit(t *testing.T) {
	e := start(t, Options{MaxConns: 3})
	var held []*agent.Key
	for i := 0; i < 3; i++ {
		ids, err := agent.NewClient(e.dial(t, e.tokA)).List()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ids...)
	}
	closedSilently(t, e.dial(t, e.tokA), "fourth connection")
	if !strings.Contains(e.logs.String(), "connection limit reached") {
		t.Fatal("limit not logged")
	}
	_ = held
}

// TestIdleTimeout: a session idle for IdleTimeout is closed. The List
// before must come within the timeout; a loaded run that stalled longer
// between the hello and the List is made again with twice the timeout
// (a liveness bound: the close of the idle session is checked every time).
func TestIdleTimeout(t *testing.T) {
	for idle := 100 * time.Millisecond; ; idle *= 2 {
		e := start(t, Options{IdleTimeout: idle})
		began := time.Now()
		c := e.dial(t, e.tokA)
		if _, err := agent.NewClient(c).List(); err != nil {
			if time.Since(began) >= idle && idle < 10*time.Second {
				t.Logf("List came after the %s idle timeout; again with %s", idle, 2*idle)
				continue
			}
			t.Fatal(err)
		}
		closedSilently(t, c, "idle session")
		return
	}
}

func TestShutdownEndsSessions(t *testing.T) {
	e := start(t, Options{})
	c := e.dial(t, e.tokA)
	if _, err := agent.NewClient(c).List(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	e.srv.Shutdown(ctx) // the open session is closed after the grace period
	closedSilently(t, c, "session at shutdown")
}

func TestKeysReloadedPerConnection(t *testing.T) {
	e := start(t, Options{})
	// Replace A's map entry by a single-object entry naming a new key.
	k := testkeys.New(t, e.dir, "new", "rsa2048", "tk-main:a new", testkeys.PKCS1)
	data := `{"a": {"private_key": "` + k.Private + `", "public_key": "` + k.Public + `"}}`
	if err := os.WriteFile(e.keysFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cl := agent.NewClient(e.dial(t, e.tokA))
	ids, err := cl.List()
	if err != nil || comments(ids) != "tk-main:a new" {
		t.Fatalf("after reload: %q %v", comments(ids), err)
	}
	for _, fl := range []agent.SignatureFlags{agent.SignatureFlagRsaSha256, agent.SignatureFlagRsaSha512} {
		sig, err := cl.SignWithFlags(k.Signer.PublicKey(), []byte("d"), fl)
		if err != nil || k.Signer.PublicKey().Verify([]byte("d"), sig) != nil {
			t.Fatalf("rsa flags %d: %v", fl, err)
		}
	}
}
