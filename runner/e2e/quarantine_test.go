//go:build e2e

package e2e

// Quarantine end to end (docs/shield.md, Quarantine): real podman, rootful
// and rootless, the real hook as a global hook, a test host in a network
// namespace of this test's own and a host service on 127.0.0.1.

import (
	"bufio"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/testharness"
)

const qrReply = "quarantine-outside-ok"

func TestShieldQuarantine(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 1)
	host := addrs[0]
	out.tcpEcho(t, host, qrReply)
	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		shxShieldRunner(t, ctx, r)
		gate := shxNewHostService(t)
		// The test host is allowed explicitly: reachable unless quarantined.
		shxProfileConfig(t, r, gate.port, "qr", host+"\n")
		name := r.Name("qr")
		shxSandboxOK(t, ctx, r, "run", "--name", name, "--image", env.Image, "--", "sleep", "600")
		state := func() string { return strings.TrimSpace(shxSandboxOK(t, ctx, r, "shield", "state", name)) }
		gatePort := strconv.Itoa(gate.port)
		// DNS: the container's own resolver answers a name it refuses
		// (an answer, not a failure to reach it) until the quarantine.
		resolverAnswers := func() (bool, string) {
			res := shxInContainer(ctx, r, name, "nslookup -timeout=2 unlisted.qr-e2e.example 127.0.0.1")
			o := res.Stdout + res.Stderr
			return strings.Contains(o, "can't find") || strings.Contains(o, "NXDOMAIN") || strings.Contains(o, "REFUSED"), res.String()
		}
		reachable := func(what string, want bool) {
			t.Helper()
			var ok bool
			var msg string
			switch what {
			case "host":
				ok, msg = shxReach(ctx, r, name, host, shxOutsidePort, qrReply)
			case "gate":
				ok, msg = shxReach(ctx, r, name, "host.containers.internal", gatePort, shxHostReply)
			case "dns":
				ok, msg = resolverAnswers()
			}
			if ok != want {
				t.Fatalf("%s reachable = %v, want %v (state %s): %s", what, ok, want, state(), msg)
			}
		}
		if st := state(); st != "up" {
			t.Fatalf("state after run = %q", st)
		}
		reachable("host", true)
		reachable("gate", true)
		reachable("dns", true)

		res := r.Sandbox(ctx, "shield", "quarantine", name)
		if res.Code != 0 || !strings.HasPrefix(res.Stdout, "Quarantined "+name+": all its traffic is refused") {
			t.Fatalf("quarantine: %s", res)
		}
		if st := state(); st != "quarantine" {
			t.Fatalf("state after quarantine = %q", st)
		}
		gateBefore := gate.conns.Load()
		reachable("host", false)
		reachable("gate", false)
		reachable("dns", false)
		if n := gate.conns.Load(); n != gateBefore {
			t.Fatalf("the host service saw %d connections during the quarantine", n-gateBefore)
		}

		// Idempotent, with and without --json.
		res = r.Sandbox(ctx, "shield", "quarantine", name)
		if res.Code != 0 || res.Stdout != name+" is already quarantined: nothing changed.\n" {
			t.Fatalf("second quarantine: %s", res)
		}
		var js map[string]any
		if err := json.Unmarshal([]byte(shxSandboxOK(t, ctx, r, "shield", "quarantine", "--json", name)), &js); err != nil ||
			js["state"] != "quarantine" || js["changed"] != false || js["container"] != name {
			t.Fatalf("quarantine --json: %v %v", js, err)
		}
		// shield check does not undo it, a restart keeps it.
		r.Sandbox(ctx, "shield", "check")
		if st := state(); st != "quarantine" {
			t.Fatalf("state after shield check = %q", st)
		}
		if res := r.Podman(ctx, "stop", "-t", "1", name); res.Code != 0 {
			t.Fatalf("podman stop: %s", res)
		}
		if res := r.Podman(ctx, "start", name); res.Code != 0 {
			t.Fatalf("podman start: %s", res)
		}
		if st := state(); st != "quarantine" {
			t.Fatalf("state after restart = %q", st)
		}
		reachable("host", false)
		reachable("dns", false)

		// up restores the ruleset.
		shxSandboxOK(t, ctx, r, "shield", "up", name)
		if st := state(); st != "up" {
			t.Fatalf("state after up = %q", st)
		}
		reachable("host", true)
		reachable("gate", true)
		reachable("dns", true)

		// Audited.
		log := shxSandboxOK(t, ctx, r, "shield", "log", "--json", name)
		var actions []string
		sc := bufio.NewScanner(strings.NewReader(log))
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev["event"] == "action" {
				actions = append(actions, strings.TrimSpace(str(ev["action"])+" "+str(ev["detail"])))
			}
		}
		if j := strings.Join(actions, "|"); !strings.Contains(j, "|quarantine|shield_up quarantine_lifted=True") {
			t.Fatalf("audit log: %s", j)
		}

		// Usage and missing container.
		if res := r.Sandbox(ctx, "shield", "quarantine"); res.Code != 2 {
			t.Errorf("quarantine without a container: %s", res)
		}
		if res := r.Sandbox(ctx, "shield", "quarantine", r.Name("missing")); res.Code != 1 {
			t.Errorf("quarantine of a missing container: %s", res)
		}
	})
}
