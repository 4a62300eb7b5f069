package resolver

import (
	"context"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/audit"
)

// forwardedUpstream answers <anything>.api.example.test with an address,
// a TXT question with a TXT record, and every other name NXDOMAIN: the
// answers a task's DNS tunnel gets from the zone it controls.
func forwardedUpstream(t *testing.T) *upstream {
	addr, _ := loopbackUpstream(t, func(q *dns.Msg) []*dns.Msg {
		name := q.Question[0].Name
		switch {
		case q.Question[0].Qtype == dns.TypeTXT:
			m := new(dns.Msg)
			m.SetReply(q)
			rr, _ := dns.NewRR(name + ` 60 IN TXT "payload"`)
			m.Answer = []dns.RR{rr}
			return []*dns.Msg{m}
		case strings.HasSuffix(name, "api.example.test."):
			return []*dns.Msg{answer(q, "203.0.113.40")}
		}
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		return []*dns.Msg{m}
	}, nil)
	return testUpstream(t, addr)
}

// ask sends one question through decide and (when it is forwarded)
// forward, as the server does, and returns the records it produced.
func ask(t *testing.T, r *Resolver, f *refusals, name string, qtype uint16) []audit.Record {
	t.Helper()
	reply, q := r.decide(pack(t, question(name, qtype)))
	if q != nil {
		reply = r.forward(context.Background(), q, plainUDPSize)
	}
	if reply == nil {
		t.Fatalf("%s %s: no reply", name, dns.Type(qtype))
	}
	return drain(f)
}

// TestInteractiveUnlistedOnRecord: interactive mode forwards an unlisted
// name's address questions to the upstream (so a held connection can show
// its name): every such question must be on record, NXDOMAIN answers
// (the classic tunnel: data in the labels, nothing in the answer)
// included, and the types it does not forward are dns-refused records as
// in enforce mode. Before dns-forwarded records none of these was
// written: a task could phone home through DNS unseen.
func TestInteractiveUnlistedOnRecord(t *testing.T) {
	r := testResolver(t, []string{"listed.test"}, false)
	r.pol.ask = true
	r.up = forwardedUpstream(t)
	f, _ := testRefusals(t)
	r.refused = f

	tunnel := "ZGF0YS1vdXQ.c2VjcmV0.exfil.example.test."
	recs := ask(t, r, f, tunnel, dns.TypeA)
	if len(recs) != 1 {
		t.Fatalf("tunnel question: %d records, want one dns-forwarded: %+v", len(recs), recs)
	}
	rec := recs[0]
	if rec.Event != EventForwarded || rec.Outcome != "ok" || rec.Container != "c1" ||
		rec.Fields["name"] != strings.ToLower(strings.TrimSuffix(tunnel, ".")) ||
		rec.Fields["qtype"] != "A" || rec.Fields["rcode"] != "NXDOMAIN" || rec.Fields["count"] != 1 {
		t.Errorf("tunnel record %+v", rec)
	}
	if _, ok := rec.Fields["addrs"]; ok {
		t.Errorf("NXDOMAIN record with addrs: %+v", rec)
	}

	recs = ask(t, r, f, "www.api.example.test.", dns.TypeAAAA)
	recs = append(recs, ask(t, r, f, "www.api.example.test.", dns.TypeA)...)
	if len(recs) != 2 {
		t.Fatalf("resolving name: %d records, want two: %+v", len(recs), recs)
	}
	if got := recs[1]; got.Event != EventForwarded || got.Fields["rcode"] != "NOERROR" ||
		len(got.Fields["addrs"].([]string)) != 1 || got.Fields["addrs"].([]string)[0] != "203.0.113.40" {
		t.Errorf("resolving name record %+v", got)
	}

	// The same question again (now from the cache): counted, not a new
	// record within the second.
	if recs := ask(t, r, f, "www.api.example.test.", dns.TypeA); len(recs) != 0 {
		t.Errorf("repeat within the second: %+v, want it counted", recs)
	}
	f.mu.Lock()
	pending := 0
	for k, st := range f.dests {
		if k.event == EventForwarded && k.name == "www.api.example.test" && k.qtype == "A" {
			pending = st.pending
		}
	}
	f.mu.Unlock()
	if pending != 1 {
		t.Errorf("repeat: pending %d, want 1", pending)
	}

	// TXT of an unlisted name: not forwarded, refused on record.
	recs = ask(t, r, f, "cGF5bG9hZA.exfil.example.test.", dns.TypeTXT)
	if len(recs) != 1 || recs[0].Event != "dns-refused" || recs[0].Fields["qtype"] != "TXT" {
		t.Fatalf("unlisted TXT: %+v, want one dns-refused record", recs)
	}
}

// TestLearnAddresslessOnRecord: learn mode forwards every name and type;
// an answer with addresses is a seen record, and one without (a TXT
// answer, NXDOMAIN) is a dns-forwarded record rather than nothing.
func TestLearnAddresslessOnRecord(t *testing.T) {
	r := testResolver(t, nil, true)
	r.learning = true
	r.up = forwardedUpstream(t)
	f, _ := testRefusals(t)
	r.refused = f
	recs := ask(t, r, f, "cGF5bG9hZA.exfil.example.test.", dns.TypeTXT)
	if len(recs) != 1 || recs[0].Event != EventForwarded || recs[0].Fields["qtype"] != "TXT" || recs[0].Fields["rcode"] != "NOERROR" {
		t.Fatalf("learn TXT: %+v, want one dns-forwarded record", recs)
	}
	recs = ask(t, r, f, "nothing.exfil.example.test.", dns.TypeA)
	if len(recs) != 1 || recs[0].Event != EventForwarded || recs[0].Fields["rcode"] != "NXDOMAIN" {
		t.Fatalf("learn NXDOMAIN: %+v, want one dns-forwarded record", recs)
	}
}
