package integration

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestResolverCNAMEAdmission is the review's tunnel case: a listed name
// whose CNAME points into a zone the container's user controls. Only the
// answer to the listed name admits its target; the admitted name's own
// answers admit nothing (not 40 branching CNAMEs at TTL 0, not a single
// second-generation one), and what goes upstream is the lower-case name,
// never the client's letter case.
func TestResolverCNAMEAdmission(t *testing.T) {
	tp := newTopo(t)
	up := startTestUpstream(t, tp)
	add := func(s string) {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		up.mu.Lock()
		up.zone[n] = append(up.zone[n], rr)
		up.mu.Unlock()
	}
	seed := "seed." + nameListed
	add(seed + ". 60 IN CNAME hop0.evil.test.")
	const fan = 40
	for i := 1; i <= fan; i++ {
		add(fmt.Sprintf("hop0.evil.test. 0 IN CNAME hop%d.evil.test.", i))
	}
	seed2 := "seed2." + nameListed
	add(seed2 + ". 60 IN CNAME gen1.evil.test.")
	add("gen1.evil.test. 60 IN CNAME gen2.evil.test.")
	add("gen2.evil.test. 60 IN A 203.0.113.77")

	dir := stateDir(t)
	resolverBundle(t, dir)
	startedResolver(t, tp, dir)

	if m, err := tp.query("127.0.0.1", seed, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("%s: %v %v", seed, m, err)
	}
	// The listed name's single CNAME target is admitted, and asked for in
	// lower case whatever the client wrote.
	if m, err := tp.query("127.0.0.1", "HoP0.EviL.TeSt", dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != fan {
		t.Fatalf("hop0 (admitted by the listed name's CNAME): %v %v", m, err)
	}
	refusedNames := []string{"gen2.evil.test"}
	for i := 1; i <= fan; i++ {
		refusedNames = append(refusedNames, fmt.Sprintf("hop%d.evil.test", i))
	}
	if m, err := tp.query("127.0.0.1", seed2, dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("%s: %v %v", seed2, m, err)
	}
	if m, err := tp.query("127.0.0.1", "gen1.evil.test", dns.TypeA, "udp"); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 2 {
		t.Fatalf("gen1 (admitted by the listed name's CNAME): %v %v", m, err)
	}
	before := up.total()
	admitted := 0
	for _, n := range refusedNames {
		m, err := tp.query("127.0.0.1", n, dns.TypeA, "udp")
		if err != nil {
			t.Fatal(err)
		}
		if m.Rcode != dns.RcodeRefused {
			admitted++
		}
	}
	if admitted != 0 {
		t.Errorf("%d names admitted through an admitted name's answer, want 0", admitted)
	}
	if n := up.total() - before; n != 0 {
		t.Errorf("%d upstream queries for names no listed answer admitted", n)
	}
	up.mu.Lock()
	raw := append([]string(nil), up.raw...)
	up.mu.Unlock()
	for _, n := range raw {
		if n != strings.ToLower(n) {
			t.Errorf("upstream received %q: the client's letter case was forwarded", n)
		}
	}
}
