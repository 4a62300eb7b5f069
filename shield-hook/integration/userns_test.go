package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// rootlessContainer starts the "container" of a rootless test: a process
// in a new user namespace (root mapped) with its own network namespace
// owned by that user namespace, returned once it has both. It is killed
// when t ends, if it has not been before.
func rootlessContainer(t *testing.T) *exec.Cmd {
	t.Helper()
	ctr := exec.Command("unshare", "--user", "--map-root-user", "--net", "sleep", "600")
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ctr.Process.Kill(); _ = ctr.Wait() })
	pid := strconv.Itoa(ctr.Process.Pid)
	hostNS, _ := os.Stat("/proc/self/ns/net")
	for i := 0; ; i++ {
		got, err := os.Stat("/proc/" + pid + "/ns/net")
		b, _ := os.ReadFile("/proc/" + pid + "/comm")
		if err == nil && !os.SameFile(hostNS, got) && strings.TrimSpace(string(b)) == "sleep" {
			break
		}
		if i > 500 {
			t.Fatal("container process never got its namespaces")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ctr
}

// TestRootlessUserNamespace runs the hook the way rootless podman does: as
// uid 0 of a user namespace that owns the container's network namespace but
// not the namespace the hook starts in. Entering the container netns is
// allowed there, switching back is not (EPERM), so the hook must never need
// to switch back.
func TestRootlessUserNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctr := rootlessContainer(t)
	pid := strconv.Itoa(ctr.Process.Pid)
	// A link and a default route so that gateway discovery finds one.
	peer := fmt.Sprintf("hku%d", os.Getpid()%100000)
	sh(t, "ip", "netns", "add", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", peer).Run() })
	sh(t, "ip", "link", "add", "u0", "netns", pid, "type", "veth", "peer", "name", "u1", "netns", peer)
	in := []string{"nsenter", "-t", pid, "-n", "--"}
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "addr", "add", ctrV4 + "/24", "dev", "u0"},
		{"ip", "link", "set", "u0", "up"},
		{"ip", "route", "add", "default", "via", gwV4},
	} {
		sh(t, append(in, c...)...)
	}

	dir := stateDir(t)
	writeBundle(t, dir, baseScript())
	for run := 1; run <= 2; run++ {
		// The hook joins only the user namespace (as its uid 0), staying in
		// the host's network namespace like podman's rootless runtime.
		cmd := exec.Command("nsenter", "--user", "-t", pid, "--", hookBin, "createRuntime")
		cmd.Stdin = bytes.NewReader(ociState(ctr.Process.Pid, dir, curVer()))
		var se bytes.Buffer
		cmd.Stderr = &se
		if err := cmd.Run(); err != nil {
			t.Fatalf("run %d: %v: %s %s", run, err, se.String(), readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
		}
	}
	out := sh(t, append(in, "nft", "list", "table", "inet", "terok_shield")...)
	if st := ruleset.Classify(out); st != ruleset.StateUp {
		t.Fatalf("state %s:\n%s", st, out)
	}
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileGateway)); got != gwV4+"\n" {
		t.Fatalf("gateway %q", got)
	}
	// And the hook could not have changed the host namespace's rules.
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "terok_shield") {
		t.Fatalf("table leaked into the host netns: %s", out)
	}
}
