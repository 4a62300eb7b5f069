package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// refusedBundle is resolverBundle with deniedV4 on the deny list (set and
// deny.list, as `shield deny` leaves them) and an audited container name.
func refusedBundle(t *testing.T, dir string) {
	t.Helper()
	writeBundle(t, dir, ruleset.Script{Options: ruleset.Options{DNS: dnsV4, LoopbackPorts: []int{svcPort}}, Deny: []string{deniedV4}})
	writeFile(t, dir, shieldbundle.FileDNSTier, shieldbundle.TierResolver+"\n")
	writeFile(t, dir, shieldbundle.FileUpstreamDNS, dnsV4+"\n")
	writeFile(t, dir, shieldbundle.FileProfileDomains, nameListed+"\n")
	writeFile(t, dir, shieldbundle.FileDenyList, deniedV4+"\n")
}

// namedState is ociState with the container's name and audit on.
func namedState(pid int, dir, name string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ociVersion": "1.0.2", "id": "0123456789abcdef0123", "status": "created", "pid": pid, "bundle": "/nonexistent",
		"annotations": map[string]string{
			shieldbundle.AnnProfiles: "dev-standard", shieldbundle.AnnStateDir: dir, shieldbundle.AnnVersion: resolverVer,
			shieldbundle.AnnName: name, shieldbundle.AnnAuditEnabled: "true",
		},
	})
	return b
}

func startNamedResolver(t *testing.T, tp *topo, dir, name string) int {
	t.Helper()
	r := runHook(t, "createRuntime", namedState(tp.pid, dir, name))
	if r.code != 0 {
		t.Fatalf("hook: %+v\n%s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	pid, ok := shieldbundle.ResolverPID(dir)
	if !ok {
		t.Fatal("resolver.pid does not name our resolver")
	}
	t.Cleanup(func() { _ = exitsWithin(t, pid, 0) })
	// As the runner's post-start verification does: the hook does not
	// wait for the resolver's start.
	if line := resolverReport(t, dir); line != shieldbundle.ResolverReadyOK {
		t.Fatalf("resolver.ready: %q", line)
	}
	return pid
}

// refusedRecords reads refused.jsonl and its rotations.
func refusedRecords(t *testing.T, dir string) []audit.Record {
	t.Helper()
	var out []audit.Record
	for _, p := range []string{"refused.jsonl.2", "refused.jsonl.1", "refused.jsonl"} {
		recs, err := audit.ReadFile(filepath.Join(dir, p), func(msg string) { t.Errorf("corrupt record: %s", msg) })
		if err != nil && !os.IsNotExist(unwrapAll(err)) {
			t.Fatal(err)
		}
		out = append(out, recs...)
	}
	return out
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// waitRecord polls refused.jsonl (generous deadline; no speed is asserted)
// until a record matches.
func waitRecord(t *testing.T, dir, what string, match func(audit.Record) bool) audit.Record {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, r := range refusedRecords(t, dir) {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no record for %s in:\n%s", what, readFile(t, filepath.Join(dir, "refused.jsonl")))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func field(r audit.Record, k string) string {
	v, ok := r.Fields[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

func isRefused(dst, proto, dport string) func(audit.Record) bool {
	return func(r audit.Record) bool {
		return r.Event == "refused" && field(r, "dst") == dst && field(r, "proto") == proto && field(r, "dport") == dport
	}
}

// icmpEcho sends one ICMP/ICMPv6 echo request from the container netns.
func (tp *topo) icmpEcho(t *testing.T, host string, v6 bool) {
	t.Helper()
	network, typ := "ip4:icmp", byte(8)
	if v6 {
		network, typ = "ip6:ipv6-icmp", byte(128)
	}
	err := tp.ctrNS.Do(func() error {
		c, err := net.Dial(network, host)
		if err != nil {
			return err
		}
		defer c.Close()
		msg := []byte{typ, 0, 0, 0, 0, 1, 0, 1}
		if !v6 { // the kernel fills in the ICMPv6 checksum, not the ICMP one
			sum := uint32(0)
			for i := 0; i < len(msg); i += 2 {
				sum += uint32(msg[i])<<8 | uint32(msg[i+1])
			}
			sum = (sum >> 16) + (sum & 0xffff)
			cs := ^uint16(sum)
			msg[2], msg[3] = byte(cs>>8), byte(cs)
		}
		// The reject is reported to the sender: EPERM for the write.
		if _, err = c.Write(msg); errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EHOSTUNREACH) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("icmp echo to %s: %v", host, err)
	}
}

// TestRefusedTraffic: with the real kernel and the real hook binary, every
// class of refused traffic becomes a record of refused.jsonl with its
// fields: TCP SYN, UDP, ICMP, ICMPv6, v6, a private range with the name
// that resolved to it, the explicit deny set, not allowlisted, a refused
// DNS name; repeated attempts are counted in one record a second; the
// resolver keeps CAP_NET_ADMIN alone; poststop writes what is pending.
func TestRefusedTraffic(t *testing.T) {
	tp := newTopo(t)
	startTestUpstream(t, tp)
	dir := stateDir(t)
	refusedBundle(t, dir)
	pid := startNamedResolver(t, tp, dir, "demo-t1")
	onlyNetAdmin(t, pid)

	// A rebinding answer is passed on; connecting to it is refused, and
	// the record names what resolved to it.
	if m, err := tp.query("127.0.0.1", nameRebind, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("rebind A: %v %v", m, err)
	}
	tp.mustReject("metadata address", tp.tcp("169.254.169.254", appPort))
	tp.mustReject("not allowlisted tcp", tp.tcp(otherV4, appPort))
	tp.mustReject("not allowlisted udp", tp.udp(otherV4, udpPort))
	tp.mustReject("denied", tp.tcp(deniedV4, appPort))
	tp.mustReject("v6 not allowlisted", tp.tcp(otherV6, appPort))
	tp.mustReject("v6 private", tp.udp(privV6, udpPort))
	tp.icmpEcho(t, otherV4, false)
	tp.icmpEcho(t, otherV6, true)
	if m, err := tp.query("127.0.0.1", "phone-home.example.test", dns.TypeTXT, "udp"); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("unlisted TXT: %v %v", m, err)
	}

	port := fmt.Sprint(appPort)
	checks := []struct {
		what   string
		match  func(audit.Record) bool
		reason string
		name   string
	}{
		{"tcp to a rebinding address", isRefused("169.254.169.254", "tcp", port), "private-range", nameRebind},
		{"tcp not allowlisted", isRefused(otherV4, "tcp", port), "not-allowlisted", ""},
		{"udp not allowlisted", isRefused(otherV4, "udp", fmt.Sprint(udpPort)), "not-allowlisted", ""},
		{"tcp denied", isRefused(deniedV4, "tcp", port), "denied", ""},
		{"tcp v6", isRefused(otherV6, "tcp", port), "not-allowlisted", ""},
		{"udp v6 private", isRefused(privV6, "udp", fmt.Sprint(udpPort)), "private-range", ""},
		{"icmp", func(r audit.Record) bool { return isRefused(otherV4, "icmp", "")(r) && field(r, "icmp_type") == "8" }, "not-allowlisted", ""},
		{"icmpv6", func(r audit.Record) bool {
			return isRefused(otherV6, "icmpv6", "")(r) && field(r, "icmp_type") == "128"
		}, "not-allowlisted", ""},
		{"dns", func(r audit.Record) bool {
			return r.Event == "dns-refused" && field(r, "name") == "phone-home.example.test" && field(r, "qtype") == "TXT"
		}, "not-allowlisted", "phone-home.example.test"},
	}
	for _, c := range checks {
		r := waitRecord(t, dir, c.what, c.match)
		if r.Channel != "shield" || r.Outcome != "refused" || r.Container != "demo-t1" || r.Reason != c.reason ||
			field(r, "name") != c.name || field(r, "count") != "1" {
			t.Errorf("%s: record %+v %v, want reason %s name %q count 1 container demo-t1", c.what, r, r.Fields, c.reason, c.name)
		}
	}

	// Repeated attempts to one destination: the first record at once,
	// the rest counted; the counts add up to the attempts.
	const repeats = 30
	for i := 0; i < repeats; i++ {
		tp.mustReject("repeat", tp.tcp(otherV4, appPort+1))
	}
	sum := func() int {
		n := 0
		for _, r := range refusedRecords(t, dir) {
			if isRefused(otherV4, "tcp", fmt.Sprint(appPort+1))(r) {
				var c int
				fmt.Sscan(field(r, "count"), &c)
				n += c
			}
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for sum() < repeats && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := sum(); n != repeats {
		t.Errorf("counts of %d attempts add up to %d", repeats, n)
	}
	var recs int
	for _, r := range refusedRecords(t, dir) {
		if isRefused(otherV4, "tcp", fmt.Sprint(appPort+1))(r) {
			recs++
		}
	}
	if recs >= repeats {
		t.Errorf("%d attempts gave %d records: not rate-limited", repeats, recs)
	}
	if s := readFile(t, filepath.Join(dir, "refused.jsonl")); strings.Contains(s, nameListed+"\"") && !strings.Contains(s, nameRebind) {
		t.Errorf("unexpected names: %s", s)
	}
	t.Log(readFile(t, filepath.Join(dir, "refused.jsonl")))
	if r := runHook(t, "poststop", namedState(tp.pid, dir, "demo-t1")); r.code != 0 {
		t.Fatalf("poststop: %+v", r)
	}
	if !exitsWithin(t, pid, 5*time.Second) {
		t.Fatal("resolver still running after poststop")
	}
}

// floodUDP sends n UDP datagrams from the container netns to host, each to
// another port (a new destination for the rate limit), as fast as it can.
func (tp *topo) floodUDP(t testing.TB, host string, n int) {
	t.Helper()
	err := tp.ctrNS.Do(func() error {
		for i := 0; i < n; i++ {
			c, err := net.Dial("udp", net.JoinHostPort(host, fmt.Sprint(20000+i%40000)))
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("x")) // EPERM: rejected, as intended
			_ = c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flood: %v", err)
	}
}

// refusedBytes is the disk refused.jsonl and its rotations take.
func refusedBytes(dir string) int64 {
	var n int64
	for _, p := range []string{"refused.jsonl", "refused.jsonl.1", "refused.jsonl.2", "refused.jsonl.3"} {
		if st, err := os.Stat(filepath.Join(dir, p)); err == nil {
			n += st.Size()
		}
	}
	return n
}

// TestRefusedFlood: a 10,000-attempt flood to 10,000 destinations leaves
// refused.jsonl within its bound (3 MiB with rotations), records no more
// new destinations than the limiter lets through, counts the rest as
// dropped, and the resolver still answers afterwards.
func TestRefusedFlood(t *testing.T) {
	tp := newTopo(t)
	startTestUpstream(t, tp)
	dir := stateDir(t)
	refusedBundle(t, dir)
	startNamedResolver(t, tp, dir, "demo-flood")
	const attempts = 10000
	start := time.Now()
	tp.floodUDP(t, otherV4, attempts)
	// Let the last counts reach the file (generous; nothing is timed):
	// every attempt is either counted or dropped, within about a second.
	// Under load the kernel drops log messages on a full receive buffer;
	// the next message's sequence gap counts them exactly, so one more
	// attempt is sent each round (probes) to close a gap at the flood's end.
	var recs []audit.Record
	var counted, dropped, probes int
	tally := func() {
		recs = refusedRecords(t, dir)
		counted, dropped = 0, 0
		for _, r := range recs {
			var c, d int
			fmt.Sscan(field(r, "count"), &c)
			if s := field(r, "dropped"); s != "" {
				fmt.Sscan(s, &d)
			}
			counted, dropped = counted+c, dropped+d
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for done := false; !done && time.Now().Before(deadline); {
		tp.floodUDP(t, otherV4, 1)
		probes++
		// A destination's count is written within about a second.
		for round := time.Now().Add(3 * time.Second); time.Now().Before(round); time.Sleep(200 * time.Millisecond) {
			if tally(); counted+dropped >= attempts+probes {
				done = true
				break
			}
		}
	}
	elapsed := time.Since(start)
	size := refusedBytes(dir)
	t.Logf("%d attempts (+%d probes) in %s: %d records, %d attempts counted, %d dropped, %d bytes", attempts, probes, elapsed.Round(time.Millisecond), len(recs), counted, dropped, size)
	const bound = 3 << 20
	if size > bound {
		t.Errorf("refused.jsonl and rotations: %d bytes, over the %d bound", size, bound)
	}
	// The limiter's bound for new destinations: burst 400 + 200/s.
	if allowed := 400 + int(elapsed.Seconds()*200) + 10; len(recs) > allowed {
		t.Errorf("%d records, the limiter allows %d", len(recs), allowed)
	}
	if dropped == 0 || counted == 0 || counted+dropped != attempts+probes {
		t.Errorf("counted %d + dropped %d of %d attempts (%d flood, %d probes)", counted, dropped, attempts+probes, attempts, probes)
	}
	if m, err := tp.query("127.0.0.1", nameListed, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("resolver after the flood: %v %v", m, err)
	}
}
