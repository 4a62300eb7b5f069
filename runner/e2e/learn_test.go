//go:build e2e

package e2e

// Learn mode end to end (docs/shield.md, Shield modes; Suggesting a
// profile): real podman, rootful and rootless, the real hook, a test host
// in a network namespace of this test's own with a DNS server that is the
// shield's upstream. A learn run reaches a public (test) destination by
// name and one by address, still cannot reach a private range or a host
// port that is no terok service; the suggested profile then makes a
// second, default-deny run reach both and nothing else.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
	"terok.dev/sandbox/runner/sandbox"
)

const (
	lnReply  = "learn-outside-ok"
	lnDomain = "pkg.ln-e2e.example"
)

func TestShieldLearnMode(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 3)
	dnsIP, named, bare := addrs[0], addrs[1], addrs[2]
	out.tcpEcho(t, named, lnReply)
	out.daemon(t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address="+dnsIP, "--bind-interfaces", "--port=53", "--pid-file=",
		"--address=/"+lnDomain+"/"+named)
	shxWaitFor(t, 10*time.Second, "outside DNS server", func() bool {
		b, err := exec.Command("dig", "+short", "+time=1", "+tries=1", "@"+dnsIP, lnDomain).Output()
		return err == nil && strings.TrimSpace(string(b)) == named
	})
	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		shxShieldRunner(t, ctx, r)
		gate := shxNewHostService(t)
		other := shxNewHostService(t) // a host port that is no terok service
		profiles := shxProfileConfig(t, r, gate.port, "ln", "listed.ln-e2e.example\n")
		config := func(profile string) {
			t.Helper()
			if err := r.WriteConfig(fmt.Sprintf("gate_port = %d\nproxy_port = %d\nssh_agent_port = %d\nshield_profiles = [%q]\nshield_upstream_dns = %q\n",
				gate.port, testkit.FreePort(t), testkit.FreePort(t), profile, dnsIP)); err != nil {
				t.Fatal(err)
			}
		}
		config("ln")
		reach := func(name, addr, port, want string) (bool, string) {
			return shxReach(ctx, r, name, addr, port, want)
		}

		// Learn run: the banner, the state, the audit record.
		name := r.Name("ln")
		res := r.Sandbox(ctx, "run", "--shield-mode", "learn", "--name", name, "--project", "lnp", "--task", "ln-task", "--image", env.Image, "--", "sleep", "600")
		if res.Code != 0 {
			t.Fatalf("learn run: %s", res)
		}
		if !strings.Contains(res.Stderr, sandbox.LearnWarning) {
			t.Errorf("no learn banner on stderr: %s", res.Stderr)
		}
		if st := strings.TrimSpace(shxSandboxOK(t, ctx, r, "shield", "state", name)); st != "learn" {
			t.Fatalf("state %q, want learn", st)
		}
		if ok, msg := reach(name, lnDomain, shxOutsidePort, lnReply); !ok {
			t.Fatalf("learn mode: %s by name not reachable: %s", lnDomain, msg)
		}
		if ok, msg := reach(name, bare, shxOutsidePort, lnReply); !ok {
			t.Fatalf("learn mode: %s by address not reachable: %s", bare, msg)
		}
		// Still refused: a private range, a host port that is no terok
		// service; the gate's port still works.
		if ok, msg := reach(name, "10.88.0.1", shxOutsidePort, lnReply); ok {
			t.Fatalf("learn mode reached a private range: %s", msg)
		}
		if ok, msg := reach(name, "host.containers.internal", strconv.Itoa(other.port), shxHostReply); ok {
			t.Fatalf("learn mode reached a non-terok host port: %s", msg)
		}
		if ok, msg := reach(name, "host.containers.internal", strconv.Itoa(gate.port), shxHostReply); !ok {
			t.Fatalf("learn mode: the gate's port not reachable: %s", msg)
		}
		if other.conns.Load() != 0 {
			t.Fatalf("the non-terok host service got %d connections", other.conns.Load())
		}
		want := map[string]func(m map[string]any) bool{
			"seen name": func(m map[string]any) bool {
				return m["event"] == "seen" && m["name"] == lnDomain && strings.Contains(fmt.Sprint(m["addrs"]), named) && m["project"] == "lnp" && m["task"] == "ln-task"
			},
			// A connection to the named address is no learned record: the
			// resolver put the seen answer into the learned sets, which
			// accept it before the LEARNED rule; the seen record stands
			// for it.
			"learned bare": func(m map[string]any) bool {
				return m["event"] == "learned" && m["dst"] == bare && str(m["dport"]) == shxOutsidePort
			},
			"private refused": func(m map[string]any) bool {
				return m["event"] == "refused" && m["reason"] == "private-range" && m["dst"] == "10.88.0.1" && m["task"] == "ln-task"
			},
			"mode action": func(m map[string]any) bool {
				return m["event"] == "action" && m["action"] == "mode" && m["detail"] == "learn"
			},
		}
		var log string
		var missing []string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			log = shxSandboxOK(t, ctx, r, "shield", "log", "--json", name)
			lines := jsonLines(t, log)
			missing = missing[:0]
			for what, ok := range want {
				found := false
				for _, m := range lines {
					found = found || ok(m)
				}
				if !found {
					missing = append(missing, what)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shield log lacks %v:\n%s", missing, log)
			}
		}
		sugg := filepath.Join(profiles, "ln-learned.txt")
		shxSandboxOK(t, ctx, r, "shield", "profile", "suggest", "--output", sugg, name)
		entries := shxSandboxOK(t, ctx, r, "shield", "entries", "ln-learned")
		for _, w := range []string{lnDomain, bare} {
			if !strings.Contains(entries, w+"\n") {
				t.Fatalf("suggested profile lacks %s:\n%s", w, entries)
			}
		}
		shxSandboxOK(t, ctx, r, "stop", name)

		// Second run, default deny, with the suggested profile only.
		config("ln-learned")
		name2 := r.Name("ln2")
		shxSandboxOK(t, ctx, r, "run", "--name", name2, "--image", env.Image, "--", "sleep", "600")
		if st := strings.TrimSpace(shxSandboxOK(t, ctx, r, "shield", "state", name2)); st != "up" {
			t.Fatalf("second run state %q, want up", st)
		}
		if ok, msg := reach(name2, lnDomain, shxOutsidePort, lnReply); !ok {
			t.Fatalf("suggested profile: %s not reachable: %s", lnDomain, msg)
		}
		if ok, msg := reach(name2, bare, shxOutsidePort, lnReply); !ok {
			t.Fatalf("suggested profile: %s not reachable: %s", bare, msg)
		}
		// Default deny for anything the learn run did not reach.
		if ok, msg := reach(name2, dnsIP, shxOutsidePort, lnReply); ok {
			t.Fatalf("default-deny run reached an address no profile lists: %s", msg)
		}
		shxSandboxOK(t, ctx, r, "stop", name2)
	})
}

// BenchmarkShieldLearnVsEnforce: shielded start (`sleep 60`, so the
// post-start verification lists the table) in learn mode against the
// default enforce mode, interleaved pairs, medians and ratio as in
// benchShieldStart (docs/shield.md, Performance).
func BenchmarkShieldLearnVsEnforce(b *testing.B) { benchModeVsEnforce(b, "learn", "lnb") }

// BenchmarkShieldInteractiveVsEnforce is BenchmarkShieldLearnVsEnforce for
// interactive mode: its start adds the queue rules (the xt NFQUEUE form on
// a kernel without nft_queue) and the resolver's queue and decider socket
// (docs/shield.md, Interactive mode: the queue rule).
func BenchmarkShieldInteractiveVsEnforce(b *testing.B) { benchModeVsEnforce(b, "interactive", "iqb") }

// benchModeVsEnforce times `run --shield-mode mode … sleep 60` against the
// enforce mode, rootful and rootless, 15 interleaved pairs; tag prefixes
// the container names.
func benchModeVsEnforce(b *testing.B, mode, tag string) {
	for _, kind := range []string{"root", "rootless"} {
		b.Run(kind, func(b *testing.B) {
			env := H(b)
			r := env.Root(b)
			if kind == "rootless" {
				r = env.Rootless(b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			shxShieldRunner(b, ctx, r)
			if err := r.WriteConfig("shield_profiles = [\"dev-standard\"]\n"); err != nil {
				b.Fatal(err)
			}
			const pairs = 15
			name := func(side string, i, j int) string { return r.Name(fmt.Sprintf("%s%s-%d-%d", tag, side, i, j)) }
			start := func(side string, mode string) func(i, j int) {
				return func(i, j int) {
					res := r.Sandbox(ctx, "run", "--shield-mode", mode, "--name", name(side, i, j), "--image", env.Image, "--", "sleep", "60")
					if res.Code != 0 {
						b.Fatalf("run --shield-mode %s: %s", mode, res)
					}
				}
			}
			remove := func(i, j int) { r.Podman(ctx, "rm", "-f", "-t", "0", name("m", i, j), name("e", i, j)) }
			start("m", mode)(-1, 0)
			start("e", "enforce")(-1, 0)
			remove(-1, 0)
			timeInterleaved(b, pairs, mode, start("m", mode), start("e", "enforce"), remove)
		})
	}
}
