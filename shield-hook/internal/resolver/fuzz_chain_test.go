package resolver

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/ruleset"
)

// FuzzWalkChain feeds arbitrary upstream answers (untrusted: the upstream
// relays what any zone's server says) to the chain walk: it must never
// panic, never admit more than maxChain names, never the same name twice,
// never one for TTL 0 or past the learned maximum, and never learn a
// special address or one outside the TTL clamp.
func FuzzWalkChain(f *testing.F) {
	seed := new(dns.Msg)
	seed.SetQuestion("seed.listed.test.", dns.TypeA)
	for _, s := range []string{
		"seed.listed.test. 60 IN CNAME hop0.evil.test.",
		"hop0.evil.test. 0 IN CNAME a.evil.test.",
		"hop0.evil.test. 0 IN CNAME b.evil.test.",
		"a.evil.test. 60 IN A 198.51.100.9",
		"seed.listed.test. 60 IN A 10.0.0.1",
	} {
		rr, err := dns.NewRR(s)
		if err != nil {
			f.Fatal(err)
		}
		seed.Answer = append(seed.Answer, rr)
	}
	b, err := seed.Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		m := new(dns.Msg)
		if m.Unpack(pkt) != nil || len(m.Question) != 1 {
			return
		}
		qname, ok, _ := normalizeName(m.Question[0].Name)
		if !ok {
			return
		}
		res := walkChain(qname, m.Answer)
		if len(res.targets) > maxChain {
			t.Fatalf("%d targets, bound %d", len(res.targets), maxChain)
		}
		seen := map[string]bool{qname: true}
		for _, tg := range res.targets {
			if seen[tg.name] {
				t.Fatalf("target %q twice (or the question itself)", tg.name)
			}
			seen[tg.name] = true
			if tg.ttl <= 0 || tg.ttl > time.Duration(ruleset.LearnedMaxTTLSeconds)*time.Second {
				t.Fatalf("target %q admitted for %s", tg.name, tg.ttl)
			}
		}
		for _, it := range res.learn {
			if ruleset.IsSpecial(it.addr) {
				t.Fatalf("special address %s learned", it.addr)
			}
			if it.ttl < time.Duration(ruleset.LearnedMinTTLSeconds)*time.Second || it.ttl > time.Duration(ruleset.LearnedMaxTTLSeconds)*time.Second {
				t.Fatalf("address %s learned for %s", it.addr, it.ttl)
			}
		}
	})
}
