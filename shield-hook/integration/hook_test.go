// Package integration runs the real terok-shield-hook binary the way an OCI
// runtime does (stage argument, state JSON on stdin, empty environment)
// against network namespaces the tests make, with real nft, dnsmasq and
// dig; the in-process cases here share that topology (docs/testing.md,
// Where tests live).
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/shield-hook/internal/hook"
)

// hookBin is the real hook binary, built once for the package's tests
// (static, as the Makefile builds it) or taken from TEROK_BIN_DIR.
var hookBin string

func TestMain(m *testing.M) {
	code := func() int {
		if d := os.Getenv("TEROK_BIN_DIR"); d != "" {
			hookBin = filepath.Join(d, "terok-shield-hook")
			if _, err := os.Stat(hookBin); err == nil {
				return testkit.Run(m)
			}
		}
		tmp, err := os.MkdirTemp("", "hkbin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(tmp)
		hookBin = filepath.Join(tmp, "terok-shield-hook")
		cmd := exec.Command("go", "build", "-o", hookBin, "terok.dev/sandbox/shield-hook/cmd/terok-shield-hook")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build hook: %v\n%s", err, out)
			return 1
		}
		return testkit.Run(m)
	}()
	os.Exit(code)
}

type hookResult struct {
	code           int
	stdout, stderr string
}

// runHook runs the real binary the way an OCI runtime does: stage argument,
// state JSON on stdin, and an empty environment.
func runHook(t *testing.T, stage string, state []byte) hookResult {
	t.Helper()
	args := []string{}
	if stage != "" {
		args = append(args, stage)
	}
	cmd := exec.Command(hookBin, args...)
	cmd.Env = []string{}
	cmd.Stdin = bytes.NewReader(state)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return hookResult{code, so.String(), se.String()}
}

// curVer is the bundle version the hook under test expects.
func curVer() string { return fmt.Sprint(shieldbundle.BundleVersion) }

func ociState(pid int, dir, ver string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ociVersion": "1.0.2",
		"id":         "0123456789abcdef0123",
		"status":     "created",
		"pid":        pid,
		"bundle":     "/nonexistent",
		"annotations": map[string]string{
			shieldbundle.AnnProfiles: "dev-standard",
			shieldbundle.AnnStateDir: dir,
			shieldbundle.AnnVersion:  ver,
		},
	})
	return b
}

// writeBundle writes ruleset.nft the way pre-start does, with the common
// ruleset generator.
func writeBundle(t *testing.T, dir string, s ruleset.Script) {
	t.Helper()
	text, skipped, err := s.Render()
	if err != nil || len(skipped) > 0 {
		t.Fatalf("render: %v %v", err, skipped)
	}
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRuleset), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func baseScript() ruleset.Script {
	return ruleset.Script{
		Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}},
		Allow:   []string{allowV4, allowV6, deniedV4},
		Deny:    []string{deniedV4},
	}
}

func readFile(t *testing.T, path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestVersionFlags(t *testing.T) {
	r := runHook(t, "--bundle-version", nil)
	if r.code != 0 || r.stdout != curVer()+"\n" {
		t.Fatalf("--bundle-version: %+v", r)
	}
	r = runHook(t, "--version", nil)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "terok-shield-hook ") {
		t.Fatalf("--version: %+v", r)
	}
}

// TestEnforcement is the main proof: the real hook applies the generated
// ruleset in the container netns and real connections behave.
func TestEnforcement(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)

	// Baseline without the shield: everything answers, so every rejection
	// below is the firewall's doing.
	for _, a := range []string{allowV4, otherV4, deniedV4, privV4, allowV6, otherV6, privV6} {
		tp.mustReach("baseline tcp "+a, tp.tcp(a, appPort))
	}
	tp.mustReach("baseline udp dns-port on non-resolver", tp.udp(otherV4, 53))
	tp.mustReach("baseline gateway other port", tp.tcp(gwV4, otherPort))

	writeBundle(t, dir, baseScript())
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer()))
	if r.code != 0 {
		t.Fatalf("hook failed: %+v\nerror log: %s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileGateway)); got != gwV4+"\n" {
		t.Errorf("gateway file = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileGatewayV6)); got != gwV6+"\n" {
		t.Errorf("gateway_v6 file = %q", got)
	}
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileContainerID)); got != "0123456789ab\n" {
		t.Errorf("container.id = %q", got)
	}
	listing, err := tp.nft("list", "table", "inet", "terok_shield")
	if err != nil {
		t.Fatal(err)
	}
	if st := ruleset.Classify(listing); st != ruleset.StateUp {
		t.Fatalf("state %s after the hook", st)
	}

	// Forget the neighbours learned during the baseline: the shield must let
	// ARP and IPv6 neighbour discovery resolve them again.
	sh(t, "ip", "netns", "exec", tp.ctr, "ip", "neigh", "flush", "all")
	sh(t, "ip", "netns", "exec", tp.out, "ip", "neigh", "flush", "all")

	tp.mustReach("allowlisted v4", tp.tcp(allowV4, appPort))
	tp.mustReach("allowlisted v4 udp", tp.udp(allowV4, udpPort))
	tp.mustReach("allowlisted v6", tp.tcp(allowV6, appPort))
	tp.mustReject("unlisted v4", tp.tcp(otherV4, appPort))
	tp.mustReject("unlisted v4 udp", tp.udp(otherV4, udpPort))
	tp.mustReject("unlisted v6", tp.tcp(otherV6, appPort))
	tp.mustReject("unlisted v6 udp", tp.udp(otherV6, udpPort))
	tp.mustReject("allowed but denied (deny precedes allow)", tp.tcp(deniedV4, appPort))
	tp.mustReject("private v4", tp.tcp(privV4, appPort))
	tp.mustReject("private v6", tp.tcp(privV6, appPort))
	tp.mustReach("service port on v4 gateway", tp.tcp(gwV4, svcPort))
	tp.mustReach("service port on v6 gateway", tp.tcp(gwV6, svcPort))
	tp.mustReject("other port on v4 gateway", tp.tcp(gwV4, otherPort))
	tp.mustReject("other port on v6 gateway", tp.tcp(gwV6, otherPort))
	tp.mustReject("udp dns port to a non-resolver", tp.udp(otherV4, 53))
	tp.mustReject("tcp dns port to a non-resolver", tp.tcp(otherV4, 53))

	// The hook's error log stays empty on success.
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileHookErrorLog)); err == nil {
		t.Errorf("hook-error.log written on success: %s", readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}

	// Running the hook again (container restarted in the same netns)
	// replaces the table instead of merging a second copy into it.
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("second run: %+v", r)
	}
	again, _ := tp.nft("list", "table", "inet", "terok_shield")
	if strings.Count(again, "chain output") != 1 || strings.Count(again, "TEROK_SHIELD_ALLOWED") != 4 {
		t.Fatalf("table merged instead of replaced:\n%s", again)
	}
}

// TestDNSOnlyToResolver checks closed DNS with a real resolver: once the
// shield is up, no ordinary socket of the container reaches the configured
// upstream or any other resolver (UDP and TCP refused at once); only a
// socket carrying ruleset.ResolverMark, as the per-container resolver's
// do, gets its answer from the upstream.
func TestDNSOnlyToResolver(t *testing.T) {
	tp := newTopo(t)
	startUpstreamDNS(t, tp)
	// Baseline: both resolvers answer the container before the shield.
	for _, server := range []string{dnsV4, rogueDNS} {
		if out, err := digIn(tp.ctr, server, "allowed.shield.test"); err != nil || strings.TrimSpace(out) != allowV4 {
			t.Fatalf("baseline query to %s: %q %v", server, out, err)
		}
	}
	dir := stateDir(t)
	writeBundle(t, dir, baseScript())
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("hook: %+v", r)
	}
	for _, server := range []string{dnsV4, rogueDNS} {
		start := time.Now()
		out, err := digIn(tp.ctr, server, "allowed.shield.test")
		if err == nil || strings.Contains(out, allowV4) {
			t.Fatalf("unmarked query to %s was answered: %q %v", server, out, err)
		}
		t.Logf("unmarked query to %s refused after %s: %s", server, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		tp.mustReject("unmarked tcp 53 to "+server, tp.tcp(server, 53))
	}
	// The resolver runs its lookups on goroutines of its own, so each
	// socket is made on a thread inside the container netns (a socket
	// stays in the namespace it was created in).
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var c net.Conn
		err := tp.ctrNS.Do(func() error {
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(ruleset.ResolverMark))
				}); err != nil {
					return err
				}
				return serr
			}}
			var err error
			c, err = d.DialContext(ctx, network, net.JoinHostPort(dnsV4, "53"))
			return err
		})
		return c, err
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Fully qualified: no search domain of the host's resolv.conf is
	// tried first.
	addrs, err := r.LookupHost(ctx, "allowed.shield.test.")
	if err != nil || strings.Join(addrs, " ") != allowV4+" "+allowV6 {
		t.Fatalf("marked query to the upstream: %v %v", addrs, err)
	}
}

// TestFailClosed feeds the real hook bad bundles and bad states: each must
// exit non-zero, explain why (in hook-error.log once the state dir is
// trusted), and leave no half-applied table.
func TestFailClosed(t *testing.T) {
	tp := newTopo(t)
	good, _, _ := baseScript().Render()
	tests := []struct {
		name      string
		setup     func(dir string) // prepare state dir
		state     func(dir string) []byte
		stage     string
		wantMsg   string
		wantInLog bool // false: state dir unusable, stderr only
	}{
		{"corrupt ruleset", func(d string) {
			writeFile(t, d, shieldbundle.FileRuleset, good+"add element inet terok_shield allow_v4 { 1.2.3.4; flush ruleset }\n")
		}, nil, "createRuntime", "apply ruleset", true},
		{"ruleset truncated mid-table", func(d string) {
			writeFile(t, d, shieldbundle.FileRuleset, good[:len(good)/2])
		}, nil, "createRuntime", "apply ruleset", true},
		{"ruleset that does not enforce", func(d string) {
			writeFile(t, d, shieldbundle.FileRuleset, strings.Replace(good, "hook output priority filter; policy drop;", "hook output priority filter; policy accept;", 1)+"add rule inet terok_shield output accept\n")
		}, nil, "createRuntime", "Ruleset verification failed", true},
		{"missing ruleset", func(d string) {}, nil, "createRuntime", "ruleset.nft not found", true},
		{"ruleset is a symlink", func(d string) {
			other := filepath.Join(t.TempDir(), "r.nft")
			_ = os.WriteFile(other, []byte(good), 0o600)
			_ = os.Symlink(other, filepath.Join(d, shieldbundle.FileRuleset))
		}, nil, "createRuntime", "read ruleset", true},
		{"ruleset world-writable", func(d string) {
			writeFile(t, d, shieldbundle.FileRuleset, good)
			_ = os.Chmod(filepath.Join(d, shieldbundle.FileRuleset), 0o666)
		}, nil, "createRuntime", "group- or world-writable", true},
		{"wrong bundle version", func(d string) { writeFile(t, d, shieldbundle.FileRuleset, good) },
			func(d string) []byte { return ociState(tp.pid, d, "3") }, "createRuntime", "bundle version '3' != " + curVer() + ". Re-run the pre-start step.", true},
		{"missing bundle version", func(d string) { writeFile(t, d, shieldbundle.FileRuleset, good) },
			func(d string) []byte { return ociState(tp.pid, d, "") }, "createRuntime", "bundle version '' != " + curVer(), true},
		{"missing pid", func(d string) { writeFile(t, d, shieldbundle.FileRuleset, good) },
			func(d string) []byte { return ociState(0, d, curVer()) }, "createRuntime", "missing pid in OCI state", true},
		{"dead pid", func(d string) { writeFile(t, d, shieldbundle.FileRuleset, good) },
			func(d string) []byte { return ociState(1<<22+7, d, curVer()) }, "createRuntime", "network namespace file missing for pid", true},
		{"world-writable state dir", func(d string) {
			writeFile(t, d, shieldbundle.FileRuleset, good)
			_ = os.Chmod(d, 0o777)
		}, nil, "createRuntime", "invalid state_dir", false},
		{"group-writable state dir", func(d string) { _ = os.Chmod(d, 0o770) }, nil, "poststop", "invalid state_dir", false},
		{"state dir is a file", func(d string) {}, func(d string) []byte {
			f := filepath.Join(d, "file")
			_ = os.WriteFile(f, nil, 0o600)
			return ociState(tp.pid, f, curVer())
		}, "createRuntime", "invalid state_dir", false},
		{"relative state dir", func(d string) {}, func(d string) []byte { return ociState(tp.pid, "shield", curVer()) }, "createRuntime",
			"invalid state_dir: state_dir must be absolute: 'shield'", false},
		{"missing state dir annotation", func(d string) {}, func(d string) []byte { return []byte(`{"pid":1,"annotations":{}}`) }, "createRuntime", "missing state_dir annotation", false},
		{"bad json", func(d string) {}, func(d string) []byte { return []byte(`{"pid":`) }, "createRuntime", "bad OCI state", false},
		{"not an object", func(d string) {}, func(d string) []byte { return []byte(`[1,2]`) }, "createRuntime", "OCI state must be a JSON object", false},
		{"annotations not an object", func(d string) {}, func(d string) []byte { return []byte(`{"pid":1,"annotations":"x"}`) }, "createRuntime", "annotations must be a JSON object", false},
		{"pid is a string", func(d string) {}, func(d string) []byte { return []byte(`{"pid":"1","annotations":{}}`) }, "poststop", "bad OCI state", false},
		{"unknown stage", func(d string) {}, nil, "prestart", "unknown stage 'prestart'", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _ = tp.nft("delete", "table", "inet", "terok_shield")
			dir := stateDir(t)
			tc.setup(dir)
			state := ociState(tp.pid, dir, curVer())
			if tc.state != nil {
				state = tc.state(dir)
			}
			r := runHook(t, tc.stage, state)
			if r.code == 0 {
				t.Fatalf("exit 0, want failure; stderr %q", r.stderr)
			}
			if !strings.Contains(r.stderr, "terok-shield hook: ") || !strings.Contains(r.stderr, tc.wantMsg) {
				t.Fatalf("stderr %q lacks %q", r.stderr, tc.wantMsg)
			}
			log := readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog))
			if tc.wantInLog {
				if !strings.Contains(log, tc.wantMsg) || strings.Count(log, "\n") != 1 {
					t.Fatalf("hook-error.log %q lacks one line with %q", log, tc.wantMsg)
				}
			} else if log != "" {
				t.Fatalf("hook-error.log written in an untrusted dir: %q", log)
			}
			out, err := tp.nft("list", "tables")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "terok_shield") {
				// Only a ruleset that applied but failed verification may
				// remain, and it must not look enforcing.
				listing, _ := tp.nft("list", "table", "inet", "terok_shield")
				if !strings.Contains(tc.wantMsg, "verification") || ruleset.Classify(listing) == ruleset.StateUp {
					t.Fatalf("a table was left behind after a failure:\n%s", listing)
				}
			}
		})
	}
}

// TestHookErrorLogNoSymlink: a symlink planted as hook-error.log must not
// redirect the privileged append.
func TestHookErrorLogNoSymlink(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	target := filepath.Join(t.TempDir(), "victim")
	writeFile(t, filepath.Dir(target), "victim", "precious\n")
	if err := os.Symlink(target, filepath.Join(dir, shieldbundle.FileHookErrorLog)); err != nil {
		t.Fatal(err)
	}
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer()))
	if r.code == 0 || !strings.Contains(r.stderr, "cannot write hook-error.log") {
		t.Fatalf("%+v", r)
	}
	if got := readFile(t, target); got != "precious\n" {
		t.Fatalf("symlink target modified: %q", got)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startUpstreamDNS runs a real dnsmasq as the upstream resolver in the
// outside netns, answering the two test domains from its own table.
func startUpstreamDNS(t *testing.T, tp *topo) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("ip", "netns", "exec", tp.out, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--listen-address="+dnsV4, "--listen-address="+rogueDNS, "--bind-interfaces", "--port=53", "--pid-file="+filepath.Join(dir, "up.pid"),
		"--address=/allowed.shield.test/"+allowV4, "--address=/blocked.shield.test/"+otherV4,
		"--address=/allowed.shield.test/"+allowV6, "--address=/blocked.shield.test/"+otherV6)
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	// Ready when it answers (queried from the outside netns itself).
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := digIn(tp.out, dnsV4, "allowed.shield.test")
		if err == nil && strings.TrimSpace(out) == allowV4 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream dnsmasq not answering: %v %q %s", err, out, se.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// digIn queries server for an A record from inside netns ns.
func digIn(ns, server, name string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "dig", "+short", "+time=2", "+tries=1", "@"+server, name, "A").CombinedOutput()
	return string(out), err
}

// TestGatewayRouteAppearsLate reproduces the user-mode networking race: the
// default route shows up after the hook started. The hook polls for it and
// still fills the gateway sets.
func TestGatewayRouteAppearsLate(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	writeBundle(t, dir, baseScript())
	c := []string{"ip", "netns", "exec", tp.ctr}
	sh(t, append(c, "ip", "route", "del", "default")...)
	sh(t, append(c, "ip", "-6", "route", "del", "default")...)

	cmd := exec.Command(hookBin, "createRuntime")
	cmd.Stdin = bytes.NewReader(ociState(tp.pid, dir, curVer()))
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The hook is polling now (it cannot finish before the route exists
	// unless it gives up, which takes 5 s); add the routes.
	time.Sleep(300 * time.Millisecond)
	sh(t, append(c, "ip", "-6", "route", "add", "default", "via", gwV6)...)
	sh(t, append(c, "ip", "route", "add", "default", "via", gwV4)...)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("hook: %v %s", err, se.String())
	}
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileGateway)); got != gwV4+"\n" {
		t.Fatalf("gateway = %q", got)
	}
	tp.mustReach("service port via late gateway", tp.tcp(gwV4, svcPort))
	if got := readFile(t, filepath.Join(dir, shieldbundle.FileGatewayV6)); got != gwV6+"\n" {
		t.Fatalf("gateway_v6 = %q", got)
	}
	o := tp.tcp(gwV6, svcPort)
	if !o.ok {
		t.Log(sh(t, append(c, "ip", "-6", "route")...), sh(t, append(c, "ip", "-6", "neigh")...), sh(t, append(c, "nft", "list", "ruleset")...))
	}
	tp.mustReach("service port via late v6 gateway", o)
}

func TestGatewayWait(t *testing.T) {
	slirp := "table inet terok_shield {\n}\nadd element inet terok_shield gateway_v4 { 10.0.2.2 }\nadd element inet terok_shield gateway_v6 { fd00::2 }\n"
	for _, tc := range []struct {
		name   string
		script string
		want   time.Duration
	}{
		{"slirp4netns elements: one look", slirp, 0},
		{"no fixed gateway: poll", "table inet terok_shield {\n}\n", 5 * time.Second},
		{"pasta: poll", "table inet terok_shield {\n}\nadd element inet terok_shield allow_v4 { 10.0.2.2 }\n", 5 * time.Second},
	} {
		if got := hook.GatewayWait([]byte(tc.script), 5*time.Second); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTransaction(t *testing.T) {
	got := string(hook.Transaction([]byte("table inet terok_shield {\n}"), []string{"10.0.2.2", "fd00::2", "bogus; flush ruleset"}))
	want := "table inet terok_shield\ndelete table inet terok_shield\ntable inet terok_shield {\n}\n" +
		"add element inet terok_shield gateway_v4 { 10.0.2.2 }\nadd element inet terok_shield gateway_v6 { fd00::2 }\n"
	if got != want {
		t.Fatalf("got %q", got)
	}
}

// TestInteractiveMarker: with the interactive marker the hook verifies the
// interactive ruleset (the queue rules), and refuses a ruleset of the
// other mode. This bundle starts no resolver, so nobody holds the queue:
// an unlisted connection is dropped (no bypass), an allowlisted one
// reached, a private one still rejected at once.
func TestInteractiveMarker(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	writeFile(t, dir, shieldbundle.FileInteractive, shieldbundle.InteractiveMarker)
	s := baseScript()
	s.Interactive = true
	writeBundle(t, dir, s)
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("interactive: %+v", r)
	}
	tp.mustDrop("unlisted, queue not held", otherV4, appPort, time.Second)
	tp.mustReach("allowlisted with interactive terminal", tp.tcp(allowV4, appPort))
	tp.mustReject("private range, never queued", tp.tcp(privV4, appPort))
	tp.mustReject("denied, never queued", tp.tcp(deniedV4, appPort))
	writeBundle(t, dir, baseScript())
	r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer()))
	if r.code == 0 || !strings.Contains(r.stderr, "queued nflog prefix missing") {
		t.Fatalf("non-interactive ruleset with the marker: %+v", r)
	}
}

// TestNoDefaultRoute: a namespace without any default route (e.g. a network
// podman set up without one) still gets its firewall after the bounded wait;
// stale gateway files are removed.
func TestNoDefaultRoute(t *testing.T) {
	tp := newTopo(t)
	c := []string{"ip", "netns", "exec", tp.ctr}
	sh(t, append(c, "ip", "route", "del", "default")...)
	sh(t, append(c, "ip", "-6", "route", "del", "default")...)
	dir := stateDir(t)
	writeBundle(t, dir, baseScript())
	writeFile(t, dir, shieldbundle.FileGateway, "198.51.100.99\n")
	writeFile(t, dir, shieldbundle.FileGatewayV6, "2001:db8::99\n")
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("hook: %+v", r)
	}
	for _, f := range []string{shieldbundle.FileGateway, shieldbundle.FileGatewayV6} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("stale %s kept", f)
		}
	}
	listing, _ := tp.nft("list", "table", "inet", "terok_shield")
	if ruleset.Classify(listing) != ruleset.StateUp {
		t.Fatal("not enforcing")
	}
}

// TestQuarantineMarker: a container restarted while quarantined (the
// quarantine marker in its state directory) gets the quarantine table, not
// its ruleset.nft: the allowlisted host, the service port on the gateway
// and DNS on the forwarder are all refused; without the marker the next
// start enforces ruleset.nft again.
func TestQuarantineMarker(t *testing.T) {
	tp := newTopo(t)
	dir := stateDir(t)
	writeBundle(t, dir, baseScript())
	writeFile(t, dir, shieldbundle.FileQuarantine, "quarantine\n")
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("quarantined start: %+v\n%s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	listing, _ := tp.nft("list", "table", "inet", "terok_shield")
	if st := ruleset.Classify(listing); st != ruleset.StateQuarantine {
		t.Fatalf("state %s with the quarantine marker:\n%s", st, listing)
	}
	tp.mustReject("allowlisted v4 in quarantine", tp.tcp(allowV4, appPort))
	tp.mustReject("allowlisted v6 in quarantine", tp.tcp(allowV6, appPort))
	tp.mustReject("service port on the gateway in quarantine", tp.tcp(gwV4, svcPort))
	tp.mustReject("dns to the forwarder in quarantine", tp.udp(dnsV4, 53))

	if err := os.Remove(filepath.Join(dir, shieldbundle.FileQuarantine)); err != nil {
		t.Fatal(err)
	}
	if r := runHook(t, "createRuntime", ociState(tp.pid, dir, curVer())); r.code != 0 {
		t.Fatalf("start after quarantine: %+v", r)
	}
	listing, _ = tp.nft("list", "table", "inet", "terok_shield")
	if st := ruleset.Classify(listing); st != ruleset.StateUp {
		t.Fatalf("state %s without the marker", st)
	}
	tp.mustReach("allowlisted v4 after quarantine", tp.tcp(allowV4, appPort))
}
