package listen

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

func TestUnixSocket(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "proxy.sock")
	l, err := Unix(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(p)); di.Mode().Perm() != 0o700 {
		t.Errorf("created parent mode %v", di.Mode())
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// In use: refused.
	if _, err := Unix(p); err == nil || err.Error() != "Socket path already in use: "+p {
		t.Errorf("live socket: %v", err)
	}
	// Stale socket (listener gone, file left): replaced.
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(p); err != nil {
		t.Fatal("stale socket file should remain for this test")
	}
	l2, err := Unix(p)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("socket file not removed on close: %v", err)
	}
	// Not a socket: refused and left alone.
	f := filepath.Join(dir, "file")
	os.WriteFile(f, []byte("keep"), 0o644)
	if _, err := Unix(f); err == nil || err.Error() != "Refusing to remove non-socket path: "+f {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(f); string(b) != "keep" {
		t.Error("regular file changed")
	}
	d := filepath.Join(dir, "adir")
	os.Mkdir(d, 0o755)
	if _, err := Unix(d); err == nil || !strings.HasPrefix(err.Error(), "Refusing to remove non-socket path") {
		t.Errorf("directory: %v", err)
	}
	ln := filepath.Join(dir, "link")
	os.Symlink(f, ln)
	if _, err := Unix(ln); err == nil || !strings.HasPrefix(err.Error(), "Refusing to remove non-socket path") {
		t.Errorf("symlink: %v", err)
	}
}

func TestTCPOnLoopbackOnly(t *testing.T) {
	l, err := TCP(0 + testkit.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if h, _, _ := net.SplitHostPort(l.Addr().String()); h != "127.0.0.1" {
		t.Errorf("listening on %s", l.Addr())
	}
	port := l.Addr().(*net.TCPAddr).Port
	if _, err := TCP(port); err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("port in use: %v", err)
	}
}

// Descriptor handling itself is tested with real LISTEN_FDS in
// common/sdactivation and through the binary in the server's tests; here
// only that another process's variables are not taken (a test process's
// descriptors 3 and 4 are its own).
func TestInheritedIgnoredUnlessForUs(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{"LISTEN_PID": "1", "LISTEN_FDS": "2"},
	} {
		t.Run(fmt.Sprint(env), func(t *testing.T) {
			for k, v := range env {
				t.Setenv(k, v)
			}
			_, _, ok, err := Inherited()
			if ok || err != nil {
				t.Errorf("ok=%v err=%v", ok, err)
			}
		})
	}
}

func TestWritePID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "run", "p.pid")
	if err := WritePID(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if strings.TrimSpace(string(b)) != itoa(os.Getpid()) {
		t.Errorf("pid file %q", b)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
