package bridge

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"terok.dev/sandbox/sshagent/internal/handshake"
)

const tok = "terok-p-0123456789abcdef0123456789abcdef"

// echoAgent accepts connections, checks the handshake and echoes the rest.
func echoAgent(t *testing.T) (addr string, tokens <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				got, err := handshake.Read(c, 5*time.Second)
				if err != nil {
					ch <- "ERR " + err.Error()
					return
				}
				ch <- got
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), ch
}

func tcpDial(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

func serve(t *testing.T, o Options) *Bridge {
	t.Helper()
	b, err := Listen(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Stat(o.Listen); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
	})
	return b
}

func TestRelay(t *testing.T) {
	addr, tokens := echoAgent(t)
	sock := filepath.Join(t.TempDir(), "d", "agent.sock")
	serve(t, Options{Listen: sock, Dial: tcpDial(addr), Token: tok})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	if fi, _ := os.Stat(filepath.Dir(sock)); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	for i := 0; i < 3; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := []byte("hello agent " + strings.Repeat("x", i*5000))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.(*net.UnixConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != string(msg) {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
		c.Close()
		if got := <-tokens; got != tok {
			t.Fatalf("agent got handshake %q", got)
		}
	}
}

func TestRetryThenConnect(t *testing.T) {
	addr, tokens := echoAgent(t)
	var calls atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) {
		if calls.Add(1) < 4 {
			return nil, errors.New("connection refused (simulated start-up)")
		}
		return tcpDial(addr)(ctx)
	}
	sock := filepath.Join(t.TempDir(), "d", "agent.sock")
	serve(t, Options{Listen: sock, Dial: dial, Token: tok, Interval: 5 * time.Millisecond, Attempts: 10})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("after retries: %q %v", buf, err)
	}
	if <-tokens != tok || calls.Load() != 4 {
		t.Fatalf("calls %d", calls.Load())
	}
}

func TestGiveUpClosesClient(t *testing.T) {
	dial := func(context.Context) (net.Conn, error) { return nil, errors.New("refused") }
	sock := filepath.Join(t.TempDir(), "d", "agent.sock")
	serve(t, Options{Listen: sock, Dial: dial, Token: tok, Interval: time.Millisecond, Attempts: 3})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d %v, want EOF", n, err)
	}
}

// When the agent ends the session (e.g. it refused the token) the client
// sees EOF even though it never closed its side.
func TestAgentCloseEndsClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			handshake.Read(c, 5*time.Second)
			c.Close()
		}
	}()
	sock := filepath.Join(t.TempDir(), "d", "agent.sock")
	serve(t, Options{Listen: sock, Dial: tcpDial(ln.Addr().String()), Token: tok})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d %v, want EOF", n, err)
	}
}

func TestListenRefusals(t *testing.T) {
	base := t.TempDir()
	dial := tcpDial("127.0.0.1:1")
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o755)
	notSock := filepath.Join(base, "priv", "file")
	os.Mkdir(filepath.Dir(notSock), 0o700)
	os.WriteFile(notSock, []byte("x"), 0o600)
	cases := []struct {
		o    Options
		want string
	}{
		{Options{Listen: "rel/agent.sock", Dial: dial, Token: tok}, "absolute"},
		{Options{Listen: filepath.Join(open, "agent.sock"), Dial: dial, Token: tok}, "accessible to other users"},
		{Options{Listen: notSock, Dial: dial, Token: tok}, "not a socket"},
		{Options{Listen: filepath.Join(base, "x", "s"), Dial: dial, Token: ""}, "token"},
		{Options{Listen: filepath.Join(base, "x", "s"), Token: tok}, "no agent address"},
	}
	for _, c := range cases {
		if _, err := Listen(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want %q", c.o.Listen, err, c.want)
		}
	}
	// A live socket is refused; a stale one is replaced.
	sock := filepath.Join(base, "live", "agent.sock")
	b := serve(t, Options{Listen: sock, Dial: dial, Token: tok})
	if _, err := Listen(Options{Listen: sock, Dial: dial, Token: tok}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("live socket: %v", err)
	}
	_ = b
	stale := filepath.Join(base, "stale", "agent.sock")
	os.Mkdir(filepath.Dir(stale), 0o700)
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	serve(t, Options{Listen: stale, Dial: dial, Token: tok})
}
