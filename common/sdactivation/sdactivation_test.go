package sdactivation

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
)

// envChild makes the test binary a socket-activated child: it takes the
// sockets listed in the variable (name/network,...), prints one line per
// listener and reports READY=1, or prints the error.
const envChild = "SDACTIVATION_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envChild); spec != "" {
		os.Exit(child(spec))
	}
	os.Exit(testkit.Run(m))
}

func child(spec string) int {
	var want []Socket
	for _, s := range strings.Split(spec, ",") {
		name, network, _ := strings.Cut(s, "/")
		want = append(want, Socket{Name: name, Network: network})
	}
	lns, err := Listeners(want...)
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return 1
	}
	if lns == nil {
		os.Stdout.WriteString("not activated\n")
		return 0
	}
	for i, ln := range lns {
		os.Stdout.WriteString(want[i].Name + " " + ln.Addr().Network() + " " + ln.Addr().String() + "\n")
	}
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(k); ok {
			os.Stdout.WriteString("left " + k + "=" + v + "\n")
		}
	}
	if err := Ready(); err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return 1
	}
	if err := Stopping(); err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
		return 1
	}
	return 0
}

// activate runs the test binary under systemd-socket-activate with one
// Unix and one TCP listener (in that order), triggers it with a connection
// and returns the child's output, the paths and the notifications it sent.
func activate(t *testing.T, spec string, extra ...string) (out, sock string, port int, notes string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	dir := t.TempDir()
	sock = filepath.Join(dir, "s.sock")
	port = testkit.FreePort(t)
	notify := filepath.Join(dir, "notify")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	args := []string{"-l", sock, "-l", "127.0.0.1:" + strconv.Itoa(port)}
	args = append(args, extra...)
	args = append(args, "-E", envChild+"="+spec, "-E", "NOTIFY_SOCKET="+notify, os.Args[0], "-test.run=^$")
	cmd := exec.Command(sa, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	// systemd-socket-activate launches the child on the first connection.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("socket never appeared: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("child did not exit\n%s%s", stdout.String(), stderr.String())
	}
	var got []string
	nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 512)
	for {
		n, err := nc.Read(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
	}
	return stdout.String(), sock, port, strings.Join(got, "|")
}

func TestListenersByName(t *testing.T) {
	// The unit's order is TCP second, but the daemon asks for it first:
	// names, not positions, decide.
	out, sock, port, notes := activate(t, "api/tcp,ctl/unix", "--fdname=ctl:api")
	want := "api tcp 127.0.0.1:" + strconv.Itoa(port) + "\nctl unix " + sock + "\n"
	if out != want {
		t.Fatalf("child output\n%s\nwant\n%s", out, want)
	}
	if notes != "READY=1|STOPPING=1" {
		t.Errorf("notifications %q, want READY=1 then STOPPING=1", notes)
	}
}

func TestListenersSharedNameByNetwork(t *testing.T) {
	// One .socket unit names all its descriptors alike: the network tells
	// them apart.
	out, sock, port, _ := activate(t, "proxy/tcp,proxy/unix", "--fdname=proxy:proxy")
	want := "proxy tcp 127.0.0.1:" + strconv.Itoa(port) + "\nproxy unix " + sock + "\n"
	if out != want {
		t.Fatalf("child output\n%s\nwant\n%s", out, want)
	}
}

func TestListenersByOrderWithoutNames(t *testing.T) {
	// An older unit without FileDescriptorName=: the descriptor order holds.
	out, sock, port, _ := activate(t, "ctl/unix,api/tcp")
	want := "ctl unix " + sock + "\napi tcp 127.0.0.1:" + strconv.Itoa(port) + "\n"
	if out != want {
		t.Fatalf("child output\n%s\nwant\n%s", out, want)
	}
}

func TestListenersErrors(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		extra      []string
		want       string
	}{
		{"wrong network", "api/tcp,ctl/unix", []string{"--fdname=api:ctl"}, "a unix socket, want tcp"},
		{"unwanted name", "api/tcp", []string{"--fdname=api:extra"}, "named extra, which it does not serve"},
		{"count without names", "api/tcp", nil, "passed 2 descriptors, it serves 1"},
		{"missing name", "api/tcp,ctl/unix,x/tcp", []string{"--fdname=ctl:api"}, "no descriptor named x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, _, notes := activate(t, tc.spec, tc.extra...)
			if !strings.HasPrefix(out, "error: ") || !strings.Contains(out, tc.want) {
				t.Fatalf("child output %q, want an error with %q", out, tc.want)
			}
			if notes != "" {
				t.Errorf("a failed start notified %q", notes)
			}
		})
	}
}

func TestListenersAcceptConnection(t *testing.T) {
	// An Accept=yes unit passes the connection: a clear error, not a
	// listener whose Accept fails later.
	sa, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("systemd-socket-activate not installed (Debian package systemd)")
	}
	sock := filepath.Join(t.TempDir(), "a.sock")
	cmd := exec.Command(sa, "-a", "-l", sock, "-E", envChild+"=api/unix", os.Args[0], "-test.run=^$")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var c net.Conn
	for i := 0; i < 500; i++ {
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.Contains(line, "a connection, not a listening socket") {
		t.Fatalf("child said %q", line)
	}
}

func TestNotActivated(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "2")
	lns, err := Listeners(Socket{Name: "api", Network: "tcp"})
	if lns != nil || err != nil {
		t.Fatalf("another process's variables: %v %v", lns, err)
	}
	if _, ok := os.LookupEnv("LISTEN_FDS"); ok {
		t.Error("LISTEN_FDS left for children")
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
}

func TestMatch(t *testing.T) {
	u, p := Socket{"unix", "unix"}, Socket{"tcp", "tcp"}
	pu, pp := Socket{"proxy", "unix"}, Socket{"proxy", "tcp"}
	for _, tc := range []struct {
		passed string // name/network,...
		want   []Socket
		order  []int
		err    string
	}{
		{"unix/unix,tcp/tcp", []Socket{u, p}, []int{0, 1}, ""},
		{"tcp/tcp,unix/unix", []Socket{u, p}, []int{1, 0}, ""},
		{"x.socket/unix,x.socket/tcp", []Socket{u, p}, []int{0, 1}, ""},
		{"x.socket/tcp,x.socket/unix", []Socket{u, p}, []int{0, 1}, ""}, // by order; the network check refuses later
		{"LISTEN_FD_3/tcp", []Socket{p}, []int{0}, ""},
		{"proxy/tcp,proxy/unix", []Socket{pu, pp}, []int{1, 0}, ""},
		{"proxy/unix,proxy/tcp", []Socket{pu, pp}, []int{0, 1}, ""},
		{"proxy/tcp,proxy/tcp", []Socket{pu, pp}, nil, "no unix socket named proxy"},
		{"proxy/unix", []Socket{pu, pp}, nil, "1 descriptors named proxy, it serves 2"},
		{"x.socket/tcp", []Socket{u, p}, nil, "passed 1 descriptors, it serves 2"},
		{"unix/unix,x.socket/tcp", []Socket{u, p}, nil, "no descriptor named tcp"},
		{"unix/unix,tcp/tcp,more/tcp", []Socket{u, p}, nil, "named more"},
		{"tcp/tcp,tcp/tcp", []Socket{p}, nil, "2 descriptors named tcp"},
	} {
		var passed []Passed
		for _, s := range strings.Split(tc.passed, ",") {
			n, nw, _ := strings.Cut(s, "/")
			passed = append(passed, Passed{n, nw})
		}
		order, err := Match(passed, tc.want)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.passed, err, tc.err)
			}
			continue
		}
		if err != nil || !equal(order, tc.order) {
			t.Errorf("%s: %v %v, want %v", tc.passed, order, err, tc.order)
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzMatch: whatever names arrive, a match selects distinct descriptors
// in range, one per wanted socket.
func FuzzMatch(f *testing.F) {
	f.Add("unix:tcp", "unix,tcp")
	f.Add("a.socket:a.socket", "unix,tcp")
	f.Add("::", "x")
	f.Fuzz(func(t *testing.T, fdnames, wanted string) {
		var names []Passed
		for i, n := range strings.Split(fdnames, ":") {
			names = append(names, Passed{Name: n, Network: []string{"tcp", "unix", ""}[i%3]})
		}
		var want []Socket
		for i, w := range strings.Split(wanted, ",") {
			want = append(want, Socket{Name: w, Network: []string{"unix", "tcp"}[i%2]})
		}
		order, err := Match(names, want)
		if err != nil {
			return
		}
		if len(order) != len(want) {
			t.Fatalf("%d indexes for %d sockets", len(order), len(want))
		}
		seen := map[int]bool{}
		for _, i := range order {
			if i < 0 || i >= len(names) || seen[i] {
				t.Fatalf("order %v for %d names", order, len(names))
			}
			seen[i] = true
		}
	})
}
