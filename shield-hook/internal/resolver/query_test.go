package resolver

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/ruleset"
)

func testResolver(t testing.TB, domains []string, open bool) *Resolver {
	t.Helper()
	lg, err := openBoundedLog(filepath.Join(t.TempDir(), "dns.log"), logMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lg.close)
	return &Resolver{pol: newPolicy(domains, open), log: lg, cache: newAnswerCache(), now: time.Now}
}

func pack(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func TestDecide(t *testing.T) {
	r := testResolver(t, []string{"listed.test"}, false)
	withEDNS := func(m *dns.Msg) *dns.Msg { m.SetEdns0(4096, false); return m }
	tests := []struct {
		name    string
		msg     func() *dns.Msg
		raw     []byte
		forward bool
		drop    bool
		rcode   int
		ede     bool
	}{
		{name: "listed A", msg: func() *dns.Msg { return question("listed.test.", dns.TypeA) }, forward: true},
		{name: "subdomain AAAA, upper case", msg: func() *dns.Msg { return question("WWW.Listed.Test.", dns.TypeAAAA) }, forward: true},
		{name: "listed CNAME", msg: func() *dns.Msg { return question("a.listed.test.", dns.TypeCNAME) }, forward: true},
		{name: "listed TXT is NODATA", msg: func() *dns.Msg { return question("listed.test.", dns.TypeTXT) }, rcode: dns.RcodeSuccess},
		{name: "listed ANY is NODATA", msg: func() *dns.Msg { return question("listed.test.", dns.TypeANY) }, rcode: dns.RcodeSuccess},
		{name: "listed AXFR is NODATA", msg: func() *dns.Msg { return question("listed.test.", dns.TypeAXFR) }, rcode: dns.RcodeSuccess},
		{name: "unlisted", msg: func() *dns.Msg { return question("evil.test.", dns.TypeA) }, rcode: dns.RcodeRefused},
		{name: "unlisted with EDNS gets EDE", msg: func() *dns.Msg { return withEDNS(question("x.evil.test.", dns.TypeTXT)) }, rcode: dns.RcodeRefused, ede: true},
		{name: "suffix lookalike", msg: func() *dns.Msg { return question("notlisted.test.", dns.TypeA) }, rcode: dns.RcodeRefused},
		{name: "escaped dot", msg: func() *dns.Msg { return question(`evil\.listed.test.`, dns.TypeA) }, rcode: dns.RcodeRefused},
		{name: "name too long", msg: func() *dns.Msg { return question(strings.Repeat("a.", 126)+"listed.test.", dns.TypeA) }, rcode: dns.RcodeFormatError},
		{name: "class CH", msg: func() *dns.Msg {
			m := question("listed.test.", dns.TypeA)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}, rcode: dns.RcodeRefused},
		{name: "two questions", msg: func() *dns.Msg {
			m := question("listed.test.", dns.TypeA)
			m.Question = append(m.Question, m.Question[0])
			return m
		}, rcode: dns.RcodeFormatError},
		{name: "no question", msg: func() *dns.Msg { m := question("listed.test.", dns.TypeA); m.Question = nil; return m }, rcode: dns.RcodeFormatError},
		{name: "answer section in a query", msg: func() *dns.Msg {
			m := question("listed.test.", dns.TypeA)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "listed.test.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(198, 51, 100, 1)}}
			return m
		}, rcode: dns.RcodeFormatError},
		{name: "non-OPT additional", msg: func() *dns.Msg {
			m := question("listed.test.", dns.TypeA)
			m.Extra = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "listed.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"x"}}}
			return m
		}, rcode: dns.RcodeFormatError},
		{name: "EDNS version 1", msg: func() *dns.Msg {
			m := withEDNS(question("listed.test.", dns.TypeA))
			m.IsEdns0().SetVersion(1)
			return m
		}, rcode: dns.RcodeBadVers},
		{name: "opcode NOTIFY", msg: func() *dns.Msg { m := question("listed.test.", dns.TypeA); m.Opcode = dns.OpcodeNotify; return m }, rcode: dns.RcodeNotImplemented},
		{name: "update", msg: func() *dns.Msg { m := question("listed.test.", dns.TypeA); m.Opcode = dns.OpcodeUpdate; return m }, rcode: dns.RcodeNotImplemented},
		{name: "a response", msg: func() *dns.Msg { m := question("listed.test.", dns.TypeA); m.Response = true; return m }, drop: true},
		{name: "short packet", raw: []byte{1, 2, 3}, drop: true},
		{name: "garbage after header", raw: []byte{0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff}, rcode: dns.RcodeFormatError},
		{name: "too large", raw: make([]byte, maxQuery+1), drop: true},
	}
	for _, tc := range tests {
		pkt := tc.raw
		var req *dns.Msg
		if tc.msg != nil {
			req = tc.msg()
			pkt = pack(t, req)
		}
		reply, q := r.decide(pkt)
		switch {
		case tc.drop:
			if reply != nil || q != nil {
				t.Errorf("%s: want drop, got reply=%v q=%v", tc.name, reply != nil, q != nil)
			}
			continue
		case tc.forward:
			if q == nil || reply != nil {
				t.Errorf("%s: want forward, got reply=%v q=%v", tc.name, reply != nil, q != nil)
			}
			continue
		}
		if q != nil || reply == nil {
			t.Errorf("%s: want a local reply, got reply=%v q=%v", tc.name, reply != nil, q != nil)
			continue
		}
		m := new(dns.Msg)
		if err := m.Unpack(reply); err != nil {
			t.Errorf("%s: reply does not parse: %v", tc.name, err)
			continue
		}
		if !m.Response || m.Rcode != tc.rcode || len(m.Answer) != 0 {
			t.Errorf("%s: reply rcode %s answers %d, want %s", tc.name, dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[tc.rcode])
		}
		if id := uint16(pkt[0])<<8 | uint16(pkt[1]); m.Id != id {
			t.Errorf("%s: reply id %d, want %d", tc.name, m.Id, id)
		}
		gotEDE := false
		if opt := m.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if e, ok := o.(*dns.EDNS0_EDE); ok && e.InfoCode == dns.ExtendedErrorCodeProhibited {
					gotEDE = true
				}
			}
		}
		if gotEDE != tc.ede {
			t.Errorf("%s: EDE Prohibited %v, want %v", tc.name, gotEDE, tc.ede)
		}
	}
}

// TestEscapedNames: a label holding a dot or another escaped octet is
// refused outright, never matched by suffix (`evil\.github.com.` is a
// child of "com.", not of "github.com.").
func TestEscapedNames(t *testing.T) {
	r := testResolver(t, []string{"github.com"}, false)
	for _, n := range []string{`evil\.github.com.`, `x\.github\.com.`, `a\032b.github.com.`} {
		reply, q := r.decide(pack(t, question(n, dns.TypeA)))
		if q != nil || reply == nil {
			t.Errorf("%q: forwarded", n)
			continue
		}
		m := new(dns.Msg)
		if err := m.Unpack(reply); err != nil || m.Rcode != dns.RcodeRefused {
			t.Errorf("%q: rcode %d %v, want REFUSED", n, m.Rcode, err)
		}
	}
}

func TestOpenMarker(t *testing.T) {
	r := testResolver(t, nil, true)
	if _, q := r.decide(pack(t, question("anything.invalid.", dns.TypeTXT))); q == nil {
		t.Error("open marker: TXT of any name should be forwarded")
	}
	if reply, q := r.decide(pack(t, question("anything.invalid.", dns.TypeAXFR))); q != nil || reply == nil {
		t.Error("open marker: zone transfers are never forwarded")
	}
}

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	v, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWalkChain(t *testing.T) {
	answer := []dns.RR{
		rr(t, "www.listed.test. 60 IN CNAME edge.cdn.test."),
		rr(t, "edge.cdn.test. 7200 IN CNAME host.cdn2.test."),
		rr(t, "host.cdn2.test. 3600 IN A 198.51.100.7"),
		rr(t, "host.cdn2.test. 100000 IN AAAA 2001:db8::7"),
		rr(t, "host.cdn2.test. 3600 IN A 10.0.2.2"),        // rebinding: passed, not learned
		rr(t, "host.cdn2.test. 3600 IN A 169.254.169.254"), // metadata
		rr(t, "host.cdn2.test. 3600 IN AAAA ::ffff:127.0.0.1"),
		rr(t, "unrelated.test. 3600 IN A 203.0.113.9"),   // not on the chain: dropped
		rr(t, "loop.test. 60 IN CNAME www.listed.test."), // points into the chain, is not on it
	}
	res := walkChain("www.listed.test", answer)
	if len(res.kept) != 7 {
		t.Errorf("kept %d records, want the 7 of the chain: %v", len(res.kept), res.kept)
	}
	for _, k := range res.kept {
		if strings.HasPrefix(k.Header().Name, "unrelated") || strings.HasPrefix(k.Header().Name, "loop") {
			t.Errorf("kept off-chain record %s", k)
		}
	}
	want := map[netip.Addr]time.Duration{
		netip.MustParseAddr("198.51.100.7"): 300 * time.Second, // min(chain 60, 3600) clamped up
		netip.MustParseAddr("2001:db8::7"):  300 * time.Second,
	}
	if len(res.learn) != len(want) {
		t.Fatalf("learn %v, want %v", res.learn, want)
	}
	for _, it := range res.learn {
		if w, ok := want[it.addr]; !ok || w != it.ttl {
			t.Errorf("learned %s for %s, want %v", it.addr, it.ttl, want)
		}
	}
	if len(res.targets) != 2 || res.targets[0].name != "edge.cdn.test" || res.targets[1].name != "host.cdn2.test" ||
		res.targets[0].ttl != 60*time.Second || res.targets[1].ttl != 60*time.Second {
		t.Errorf("CNAME targets %v, want both with the chain's own 60 s", res.targets)
	}
	// A chain TTL no lower than the address's: the address's own TTL.
	res = walkChain("a.test", []dns.RR{rr(t, "A.TEST. 5000 IN A 198.51.100.8")})
	if len(res.learn) != 1 || res.learn[0].ttl != 5000*time.Second {
		t.Errorf("single A: %v", res.learn)
	}
	// A branching chain ends at the branch: neither target is admitted,
	// nor are their addresses learned.
	res = walkChain("seed.listed.test", []dns.RR{
		rr(t, "seed.listed.test. 60 IN CNAME hop0.evil.test."),
		rr(t, "hop0.evil.test. 60 IN CNAME a.evil.test."),
		rr(t, "hop0.evil.test. 60 IN CNAME b.evil.test."),
		rr(t, "a.evil.test. 60 IN A 198.51.100.9"),
	})
	if len(res.targets) != 1 || res.targets[0].name != "hop0.evil.test" || len(res.learn) != 0 || len(res.kept) != 3 {
		t.Errorf("branching: targets %v learn %v kept %v", res.targets, res.learn, res.kept)
	}
	// The same CNAME twice is not a branch.
	res = walkChain("a.test", []dns.RR{rr(t, "a.test. 60 IN CNAME b.test."), rr(t, "A.test. 30 IN CNAME B.test.")})
	if len(res.targets) != 1 || res.targets[0].ttl != 30*time.Second {
		t.Errorf("duplicate CNAME: %v", res.targets)
	}
	// TTL 0 admits nothing, TTLs over the learned maximum are capped.
	res = walkChain("a.test", []dns.RR{rr(t, "a.test. 0 IN CNAME b.test."), rr(t, "b.test. 60 IN A 198.51.100.10")})
	if len(res.targets) != 0 || len(res.learn) != 1 {
		t.Errorf("TTL 0: targets %v learn %v", res.targets, res.learn)
	}
	res = walkChain("a.test", []dns.RR{rr(t, "a.test. 4000000 IN CNAME b.test.")})
	if len(res.targets) != 1 || res.targets[0].ttl != time.Duration(ruleset.LearnedMaxTTLSeconds)*time.Second {
		t.Errorf("long TTL: %v", res.targets)
	}
	// A CNAME loop ends.
	res = walkChain("a.test", []dns.RR{rr(t, "a.test. 60 IN CNAME b.test."), rr(t, "b.test. 60 IN CNAME a.test.")})
	if len(res.targets) != 1 || len(res.kept) != 2 {
		t.Errorf("loop: %v %v", res.targets, res.kept)
	}
}

func TestBoundedLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dns.log")
	l, err := openBoundedLog(path, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	clock := time.Unix(1_000_000, 0)
	l.now = func() time.Time { return clock }
	l.last = clock
	for i := 0; i < 1000; i++ {
		l.log(0, "refused", slog.String("name", strings.Repeat("x", 40)))
	}
	// Burst only: the rest of the flood is counted, not written.
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), "\n"); n > logBurst {
		t.Errorf("%d lines written in one instant, burst is %d", n, logBurst)
	}
	for i := 0; i < 20000; i++ {
		clock = clock.Add(10 * time.Millisecond)
		l.log(0, "refused", slog.String("name", strings.Repeat("y", 40)))
	}
	var total int64
	for _, p := range []string{path, path + ".1"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if fi.Size() > 4096 {
			t.Errorf("%s is %d bytes, bound 4096", p, fi.Size())
		}
		total += fi.Size()
	}
	if _, err := os.Stat(path + ".2"); err == nil {
		t.Error("more than one rotation kept")
	}
	b, _ = os.ReadFile(path)
	if !strings.Contains(string(b), "suppressed_before=") && !strings.Contains(readOr(path+".1"), "suppressed_before=") {
		t.Error("dropped lines not reported")
	}
	// A symlink planted in place of the log is not followed.
	l.close()
	target := filepath.Join(dir, "target")
	_ = os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if _, err := openBoundedLog(path, 4096); err == nil {
		t.Error("opened a log through a symlink")
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("symlink target created")
	}
}

func readOr(p string) string { b, _ := os.ReadFile(p); return string(b) }

// TestInteractiveAsk: in interactive mode an unlisted name is answered
// under originAsk (so the held connection can show it) for the address
// types only; a listed one keeps its own origin and so is learned.
func TestInteractiveAsk(t *testing.T) {
	r := testResolver(t, []string{"listed.test"}, false)
	if _, q := r.decide(pack(t, question("unlisted.test.", dns.TypeA))); q != nil {
		t.Fatal("enforce: an unlisted name was forwarded")
	}
	r.pol.ask = true
	_, q := r.decide(pack(t, question("unlisted.test.", dns.TypeA)))
	if q == nil || q.origin != originAsk || q.listed {
		t.Fatalf("interactive: unlisted A = %+v, want forwarded under originAsk", q)
	}
	if _, q := r.decide(pack(t, question("unlisted.test.", dns.TypeAAAA))); q == nil {
		t.Fatal("interactive: unlisted AAAA not forwarded")
	}
	if reply, q := r.decide(pack(t, question("unlisted.test.", dns.TypeTXT))); q != nil || reply == nil {
		t.Fatal("interactive: an unlisted TXT must be answered locally (NODATA), never forwarded")
	}
	if _, q := r.decide(pack(t, question("www.listed.test.", dns.TypeA))); q == nil || q.origin != "listed.test" || !q.listed {
		t.Fatalf("interactive: listed name = %+v, want its own origin", q)
	}
	if !r.pol.stillAllowed(originAsk) {
		t.Fatal("originAsk not allowed while asking")
	}
	r.pol.ask = false
	if r.pol.stillAllowed(originAsk) {
		t.Fatal("originAsk allowed outside interactive mode")
	}
}
