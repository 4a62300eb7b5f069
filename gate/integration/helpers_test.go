// Package integration starts the real terok-gate binary against real git
// clients, curl and systemd-socket-activate (docs/testing.md, Where tests
// live).
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/common/testkit"
)

// gateBin is the terok-gate binary built once for the tests in this package.
var gateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "terok-gate-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gateBin = filepath.Join(dir, "terok-gate")
	out, err := exec.Command("go", "build", "-o", gateBin, "terok.dev/sandbox/gate/cmd/terok-gate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build terok-gate: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := testkit.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const adminTok = "terok-g-adadadadadadadadadadadadadadadad"

// fixture is a gate base path with two projects and a token for each.
type fixture struct {
	t                  *testing.T
	dir, base, tokfile string
	home               string
	store              *gatetokens.Store
	tokProj, tokOther  string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, base: filepath.Join(dir, "gate"), home: filepath.Join(dir, "home")}
	f.tokfile = filepath.Join(f.base, "tokens.json")
	for _, d := range []string{f.base, f.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(dir, "src")
	f.git("", "init", "-q", "-b", "main", src)
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 50)), 0o644); err != nil {
			t.Fatal(err)
		}
		f.git(src, "add", ".")
		f.git(src, "commit", "-q", "-m", fmt.Sprintf("commit %d", i))
	}
	f.git("", "clone", "-q", "--mirror", src, filepath.Join(f.base, "proj.git"))
	f.git("", "clone", "-q", "--mirror", src, filepath.Join(f.base, "other.git"))
	f.store = gatetokens.Open(f.tokfile, f.tokfile+".lock", nil)
	var err error
	if f.tokProj, err = f.store.Create(names.TaskRef{Project: "proj", Task: "1"}); err != nil {
		t.Fatal(err)
	}
	if f.tokOther, err = f.store.Create(names.TaskRef{Project: "other", Task: "2"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// gitEnv is an isolated client environment.
func (f *fixture) gitEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid"}
}

// git runs git in dir ("" = the fixture dir) and fails the test on error.
func (f *fixture) git(dir string, args ...string) string {
	f.t.Helper()
	out, err := f.tryGit(dir, args...)
	if err != nil {
		f.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func (f *fixture) tryGit(dir string, args ...string) (string, error) {
	if dir == "" {
		dir = f.dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = f.gitEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// gate is one running terok-gate process.
type gate struct {
	cmd    *exec.Cmd
	port   int
	stderr *bytes.Buffer
	done   chan error
}

// waitPort waits until something accepts on 127.0.0.1:port.
func waitPort(t *testing.T, port int, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-done:
			t.Fatalf("gate exited before listening: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("nothing listens on port %d", port)
}

// startGate runs terok-gate --foreground with extra args and environment.
// Its port is free a moment before the gate binds it; another process (or
// a port the test passes in extra) may take it first, so a gate that exits
// with "address already in use" is started again on another port.
func (f *fixture) startGate(extra []string, env ...string) *gate {
	f.t.Helper()
	for attempt := 0; ; attempt++ {
		g := &gate{port: testkit.FreePort(f.t), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
		args := append([]string{"--base-path=" + f.base, "--token-file=" + f.tokfile, "--foreground",
			"--port=" + strconv.Itoa(g.port)}, extra...)
		g.cmd = exec.Command(gateBin, args...)
		g.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + f.home}, env...)
		g.cmd.Stderr = g.stderr
		if err := g.cmd.Start(); err != nil {
			f.t.Fatal(err)
		}
		go func() { g.done <- g.cmd.Wait() }()
		listening, exitErr := waitListening(g.port, g.done)
		if listening {
			f.t.Cleanup(func() {
				g.cmd.Process.Signal(syscall.SIGKILL)
				<-g.done
				if f.t.Failed() {
					f.t.Logf("gate stderr:\n%s", g.stderr.String())
				}
			})
			return g
		}
		if exitErr == nil { // still running, not listening: the deadline passed
			g.cmd.Process.Signal(syscall.SIGKILL)
			<-g.done
			f.t.Fatalf("nothing listens on port %d\n%s", g.port, g.stderr.String())
		}
		if attempt < 3 && strings.Contains(g.stderr.String(), "address already in use") {
			f.t.Logf("port %d was taken before the gate bound it; another port", g.port)
			continue
		}
		f.t.Fatalf("gate exited before listening: %v\n%s", exitErr, g.stderr.String())
	}
}

// waitListening waits until something accepts on 127.0.0.1:port (true),
// or the process behind done exits first (false and its exit error, never
// nil), or 20 s pass (false, nil; a liveness bound).
func waitListening(port int, done <-chan error) (bool, error) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return true, nil
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("exit status 0")
			}
			return false, err
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false, nil
}

func (g *gate) url(tok, repo string) string {
	return fmt.Sprintf("http://%s@127.0.0.1:%d/%s", tok, g.port, repo)
}

// raw sends one raw HTTP request and returns the status line code and the
// whole response.
func raw(t *testing.T, port int, req string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf.Write(tmp[:n])
		if err != nil {
			break
		}
	}
	resp := buf.String()
	var code int
	if _, err := fmt.Sscanf(resp, "HTTP/1.1 %d", &code); err != nil {
		t.Fatalf("no status line in %q", resp)
	}
	return code, resp
}

func basic(tok string) string {
	return "Authorization: Basic " + b64(tok+":x") + "\r\n"
}
