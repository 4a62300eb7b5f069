package cli

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// startHUPCounter starts a process that passes the resolver identity check
// for stateDir (a copy of dash named terok-shield-hook, run with the
// resolver's exact arguments, reading the script "resolver" from its
// working directory), counting SIGHUPs in stateDir/hups, and writes
// resolver.pid. It returns a channel closed when the process exited.
func startHUPCounter(t *testing.T, stateDir string) (int, <-chan struct{}) {
	t.Helper()
	dash, err := exec.LookPath("dash")
	if err != nil {
		t.Skip("dash not installed")
	}
	data, err := os.ReadFile(dash)
	if err != nil {
		t.Fatal(err)
	}
	// Under nohup SIGHUP is ignored, and a shell started with a signal
	// ignored may not trap it (POSIX): catch it in this process instead, so
	// the child starts with the default disposition and its trap works.
	if signal.Ignored(syscall.SIGHUP) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
	}
	bin := t.TempDir()
	exe := filepath.Join(bin, shieldbundle.HookBinary)
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "trap 'echo hup >> " + filepath.Join(stateDir, "hups") + "' HUP\ntrap 'exit 0' TERM\n: > " + filepath.Join(bin, "ready") + "\nwhile :; do sleep 0.05; done\n"
	if err := os.WriteFile(filepath.Join(bin, "resolver"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, shieldbundle.ResolverArgs(stateDir)...)
	cmd.Dir = bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(bin, "ready")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("HUP counter did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(stateDir, shieldbundle.FileResolverPID), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid, done
}

// waitHUPs returns the SIGHUPs counted once want are in, or what is in at
// the deadline (a liveness bound: the trap runs after the script's current
// sleep, which a loaded machine can stretch).
func waitHUPs(stateDir string, want int) int {
	for deadline := time.Now().Add(20 * time.Second); ; {
		data, _ := os.ReadFile(filepath.Join(stateDir, "hups"))
		if n := strings.Count(string(data), "hup"); n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestShieldDomainAllowDenyOutput: the contract of `shield allow/deny C
// DOMAIN` in the resolver tier (docs/shield.md, Live operations): the lists
// change, the container's resolver gets a SIGHUP, and the output says the
// addresses are learned by the resolver. podman is a script that names the
// state directory and a running PID; the domain path needs no nft.
func TestShieldDomainAllowDenyOutput(t *testing.T) {
	s := newShieldCLI(t)
	s.euid = os.Geteuid()
	state := filepath.Join(s.home, "state")
	s.vars["TEROK_SANDBOX_STATE_DIR"] = state
	dir := filepath.Join(state, "tasks", "c1", "shield")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{"dns.tier": "resolver\n", "upstream.dns": "10.0.2.3\n", "profile.domains": "ok.example.com\n"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pid, _ := startHUPCounter(t, dir)
	bin := t.TempDir()
	inspect := `[{"Id":"c1","State":{"Pid":` + strconv.Itoa(pid) + `},"Config":{"Annotations":{"` + shieldbundle.AnnStateDir + `":"` + dir + `"}}}]`
	podman := "#!/bin/sh\ncase \"$1 $2\" in\n'container inspect') echo '" + inspect + "' ;;\n*) exit 125 ;;\nesac\n"
	if err := os.WriteFile(filepath.Join(bin, "podman"), []byte(podman), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	code, out, errOut := s.run("shield", "allow", "c1", "New.Example.com")
	if code != 0 || out != "Allowed new.example.com for c1: its addresses are allowed as the container's resolver looks them up\n" {
		t.Fatalf("allow: code %d out %q err %q", code, out, errOut)
	}
	if n := waitHUPs(dir, 1); n != 1 {
		t.Fatalf("SIGHUPs after allow: %d", n)
	}
	code, out, errOut = s.run("shield", "deny", "--json", "c1", "ok.example.com")
	if code != 0 || !strings.Contains(out, `"denied": []`) || !strings.Contains(out, `"domain": "ok.example.com"`) {
		t.Fatalf("deny --json: code %d out %q err %q", code, out, errOut)
	}
	if n := waitHUPs(dir, 2); n != 2 {
		t.Fatalf("SIGHUPs after deny: %d", n)
	}
	code, _, errOut = s.run("shield", "deny", "c1", "sub.new.example.com")
	if code != ExitError || !strings.Contains(errOut, "subdomain of the listed new.example.com") {
		t.Fatalf("deny subdomain: code %d err %q", code, errOut)
	}
	for f, want := range map[string]string{"live.domains": "new.example.com\n", "denied.domains": "ok.example.com\n"} {
		if data, _ := os.ReadFile(filepath.Join(dir, f)); string(data) != want {
			t.Errorf("%s = %q, want %q", f, data, want)
		}
	}
	// The resolver gone: the error says DNS is broken and what to do.
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if err := syscall.Kill(pid, 0); err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, _, errOut = s.run("shield", "allow", "c1", "other.example.com")
	if code != ExitError || !strings.Contains(errOut, "container DNS is broken. Restart the container to recover.") {
		t.Fatalf("allow with the resolver gone: code %d err %q", code, errOut)
	}
}
