package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// benchConcurrency is the number of client sockets querying at once (a
// container's resolver library with several threads).
const benchConcurrency = 8

// BenchmarkResolverVsDnsmasq measures queries/s for a listed name through
// the container's resolver and through the per-container dnsmasq the
// resolver replaces, in the same container netns, behind the same table,
// against the same test upstream, in the same run. dnsmasq runs with the
// configuration the old tier generated (shieldbundle.DnsmasqConf: query
// log on, its default cache) on 127.0.0.2, and once more with its cache
// off, which makes it forward every query as the resolver does. A rule in
// a separate table marks dnsmasq's upstream packets (dnsmasq cannot) so the
// shield's table lets them through, as it does the resolver's.
func BenchmarkResolverVsDnsmasq(b *testing.B) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		b.Skip("dnsmasq not installed")
	}
	tp := newTopo(b)
	startBenchUpstream(b, tp)
	dir := stateDir(b)
	writeBundleTB(b, dir)
	r := runHookTB(b, "createRuntime", ociState(tp.pid, dir, resolverVer))
	if r.code != 0 {
		b.Fatalf("hook: %+v", r)
	}
	b.Cleanup(func() { _ = runHookTB(b, "poststop", ociState(tp.pid, dir, resolverVer)) })
	if _, err := tp.nftStdin(fmt.Sprintf("table inet bench {\n chain out {\n  type filter hook output priority -10; policy accept;\n  ip daddr %s meta l4proto { tcp, udp } th dport 53 meta mark set 0x%08x\n }\n}\n", dnsV4, ruleset.ResolverMark), "-f", "-"); err != nil {
		b.Fatalf("mark rule for dnsmasq: %v", err)
	}
	startBenchDnsmasq(b, tp, "127.0.0.2")
	// cached: one listed name over and over (both answer from their
	// cache after the first query); forward: a new subdomain of the
	// listed name every query, so each one goes to the upstream.
	for _, mode := range []string{"cached", "forward"} {
		for _, srv := range []struct{ name, listen string }{{"resolver", "127.0.0.1"}, {"dnsmasq", "127.0.0.2"}} {
			b.Run(mode+"/"+srv.name, func(b *testing.B) { loadDNS(b, tp, srv.listen, mode == "forward") })
		}
	}
}

func writeBundleTB(b *testing.B, dir string) {
	text, _, err := ruleset.Script{Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}}}.Render()
	if err != nil {
		b.Fatal(err)
	}
	for name, content := range map[string]string{
		shieldbundle.FileRuleset:        text,
		shieldbundle.FileDNSTier:        shieldbundle.TierResolver + "\n",
		shieldbundle.FileUpstreamDNS:    dnsV4 + "\n",
		shieldbundle.FileProfileDomains: nameListed + "\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

func runHookTB(b *testing.B, stage string, state []byte) hookResult {
	cmd := exec.Command(hookBin, stage)
	cmd.Env = []string{}
	cmd.Stdin = strings.NewReader(string(state))
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.Fatal(err)
	}
	return hookResult{code: code, stderr: string(out)}
}

// startBenchUpstream is startTestUpstream's server for a benchmark.
func startBenchUpstream(b *testing.B, tp *topo) {
	u := &testUpstream{counts: map[string]int{}, zone: map[string][]dns.RR{}}
	wc, err := dns.NewRR("x." + nameListed + ". 60 IN A " + allowV4)
	if err != nil {
		b.Fatal(err)
	}
	u.wildcard = wc
	for _, s := range []string{nameListed + ". 60 IN A " + allowV4, nameListed + ". 60 IN AAAA " + allowV6} {
		rr, err := dns.NewRR(s)
		if err != nil {
			b.Fatal(err)
		}
		u.zone[strings.ToLower(rr.Header().Name)] = append(u.zone[strings.ToLower(rr.Header().Name)], rr)
	}
	var pc net.PacketConn
	if err := tp.outNS.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(dnsV4, "53"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: u}
	go func() { _ = srv.ActivateAndServe() }()
	b.Cleanup(func() { _ = srv.Shutdown() })
}

func startBenchDnsmasq(b *testing.B, tp *topo, listen string) {
	dir := b.TempDir()
	conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{nameListed}, os.Getpid(), nil)
	if err != nil {
		b.Fatal(err)
	}
	text := strings.Replace(string(conf), "listen-address="+shieldbundle.DnsmasqListen, "listen-address="+listen, 1)
	path := filepath.Join(dir, shieldbundle.FileDnsmasqConf)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", tp.ctr, "dnsmasq", "--conf-file="+path).CombinedOutput(); err != nil {
		b.Fatalf("dnsmasq: %v %s", err, out)
	}
	b.Cleanup(func() {
		if pid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, shieldbundle.FileDnsmasqPID)); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	})
	for i := 0; i < 200; i++ {
		if m, err := tp.query(listen, nameListed, dns.TypeA, "udp"); err == nil && len(m.Answer) == 1 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatalf("dnsmasq on %s does not answer", listen)
}

// loadDNS sends b.N A queries to server:53 from benchConcurrency UDP
// sockets in the container netns, each waiting for its answer before the
// next query (resent after 2 s without one, at most twice, like a stub
// resolver), and reports queries/s and the number of resends. The name is nameListed, or with
// unique set a new subdomain of it for every query. Every answer must be
// NOERROR with one address, or for unique names SERVFAIL of the
// resolver's forwarding rate limit (counted as rate-limited).
func loadDNS(b *testing.B, tp *topo, server string, unique bool) {
	const label = "q00000000" // rewritten in place for unique names
	name := nameListed
	if unique {
		name = label + "." + nameListed
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.SetEdns0(1232, false)
	tmpl, err := m.Pack()
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	seq.Store(time.Now().UnixNano() % 1e7 * 10) // distinct from earlier runs' names
	conns := make([]net.Conn, benchConcurrency)
	for i := range conns {
		if err := tp.ctrNS.Do(func() error {
			var err error
			conns[i], err = net.Dial("udp", net.JoinHostPort(server, "53"))
			return err
		}); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}
	var next, retries, limited atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := append([]byte(nil), tmpl...)
			buf := make([]byte, 1500)
			for id := uint16(i << 12); next.Add(1) <= int64(b.N); id++ {
				binary.BigEndian.PutUint16(q, id)
				if unique {
					copy(q[13+1:13+len(label)], fmt.Sprintf("%08d", seq.Add(1)%1e8))
				}
				tries := 0
			send:
				tries++
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write(q); err != nil {
					failed.Store(err.Error())
					return
				}
				for {
					n, err := c.Read(buf)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() && tries < 3 {
						// A stub resolver retries a lost query; so does
						// this client, and the retry is counted.
						retries.Add(1)
						goto send
					}
					if err != nil {
						failed.Store(err.Error())
						return
					}
					if n < 12 || binary.BigEndian.Uint16(buf) != id {
						continue // a late answer to an earlier query
					}
					// Unique names all go upstream: past the resolver's
					// forwarding rate they get SERVFAIL at once (dnsmasq
					// has no such bound), counted, not a failure.
					if unique && buf[3]&0x0f == dns.RcodeServerFailure && binary.BigEndian.Uint16(buf[6:]) == 0 {
						limited.Add(1)
						break
					}
					// NOERROR and one answer record.
					if buf[3]&0x0f != 0 || binary.BigEndian.Uint16(buf[6:]) != 1 {
						failed.Store(fmt.Sprintf("answer rcode %d, %d records", buf[3]&0x0f, binary.BigEndian.Uint16(buf[6:])))
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatalf("%s: %v", server, f)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
	b.ReportMetric(float64(retries.Load()), "retries")
	if unique {
		b.ReportMetric(float64(limited.Load()), "rate-limited")
	}
}

// BenchmarkHookDNSStart is the whole createRuntime hook (real binary, a
// namespace without a leftover table, as for a new container) with the
// resolver tier and with an old bundle's dnsmasq, alternating in the same
// loop so that both see the same machine load: the resolver must not make
// the hook slower. Reported per tier: the hook's wall time as the runtime
// sees it (wall-ms/op), its own total and the DNS service's start
// (hook.TimingEnv).
func BenchmarkHookDNSStart(b *testing.B) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		b.Skip("dnsmasq not installed")
	}
	tp := newTopo(b)
	tiers := []string{"resolver", "dnsmasq"}
	states := map[string][]byte{}
	for _, tier := range tiers {
		dir := stateDir(b)
		writeBundleTB(b, dir)
		if tier == "dnsmasq" {
			_ = os.Remove(filepath.Join(dir, shieldbundle.FileDNSTier))
			conf, err := shieldbundle.DnsmasqConf(dnsV4, dir, []string{nameListed}, os.Getpid(), nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileDnsmasqConf), conf, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		states[tier] = ociState(tp.pid, dir, resolverVer)
		state := states[tier]
		b.Cleanup(func() { _ = runHookTB(b, "poststop", state) })
	}
	pid := fmt.Sprint(tp.pid)
	sums := map[string]float64{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, tier := range tiers {
			b.StopTimer()
			for _, t := range tiers {
				_ = runHookTB(b, "poststop", states[t])
			}
			_ = exec.Command("nsenter", "-n", "-t", pid, "nft", "delete", "table", "inet", "terok_shield").Run()
			b.StartTimer()
			cmd := exec.Command(hookBin, "createRuntime")
			cmd.Env = []string{"TEROK_SHIELD_HOOK_TIMING=1"}
			cmd.Stdin = strings.NewReader(string(states[tier]))
			var se strings.Builder
			cmd.Stderr = &se
			start := time.Now()
			if err := cmd.Run(); err != nil {
				b.Fatalf("%s: %v %s", tier, err, se.String())
			}
			sums[tier+"-wall"] += float64(time.Since(start).Microseconds()) / 1000
			b.StopTimer()
			for _, f := range strings.Fields(se.String()) {
				k, v, ok := strings.Cut(f, "=")
				if !ok || !strings.HasSuffix(v, "ms") || (k != "total" && !strings.HasSuffix(k, "start_(parallel)")) {
					continue
				}
				var ms float64
				if _, err := fmt.Sscanf(strings.TrimSuffix(v, "ms"), "%g", &ms); err == nil {
					if k != "total" {
						k = "start"
					}
					sums[tier+"-"+k] += ms
				}
			}
			b.StartTimer()
		}
	}
	b.StopTimer()
	for k, v := range sums {
		b.ReportMetric(v/float64(b.N), k+"-ms/op")
	}
}
