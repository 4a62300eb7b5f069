package resolver

import (
	"testing"

	"github.com/miekg/dns"
)

// FuzzResolverQuery feeds arbitrary bytes to the query handler: it must
// never panic, and must either drop the message, answer it with a reply
// that parses and carries the query's ID, or forward a single validated
// question of an admitted name and an address type.
func FuzzResolverQuery(f *testing.F) {
	for _, m := range []*dns.Msg{
		question("listed.test.", dns.TypeA),
		question("www.listed.test.", dns.TypeAAAA),
		question("evil.test.", dns.TypeTXT),
		question(`a\.listed.test.`, dns.TypeA),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		m.SetEdns0(1232, true)
		if b, err = m.Pack(); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	r := testResolver(f, []string{"listed.test"}, false)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		reply, q := r.decide(pkt)
		if reply != nil && q != nil {
			t.Fatal("both a local reply and a forward")
		}
		if reply != nil {
			m := new(dns.Msg)
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("local reply does not parse: %v", err)
			}
			if !m.Response || m.Id != uint16(pkt[0])<<8|uint16(pkt[1]) || len(m.Answer) != 0 {
				t.Fatalf("bad local reply %v", m)
			}
		}
		if q != nil {
			if len(q.req.Question) != 1 || q.req.Question[0].Qclass != dns.ClassINET {
				t.Fatalf("forwarded an unvalidated question %v", q.req.Question)
			}
			if _, ok := r.pol.domains.match(q.name); !ok {
				t.Fatalf("forwarded unlisted name %q", q.name)
			}
			if !forwardedType(q.qtype, false) {
				t.Fatalf("forwarded type %d", q.qtype)
			}
		}
	})
}
