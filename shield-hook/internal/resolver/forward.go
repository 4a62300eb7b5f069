package resolver

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/ruleset"
)

// maxChain bounds how many CNAME hops of one answer are followed.
const maxChain = 16

// chainResult is what a forwarded answer admits: the records of the
// question's CNAME chain (the rest of the answer is dropped), the
// non-special addresses to learn, and the CNAME targets to admit.
type chainResult struct {
	kept    []dns.RR
	learn   []learnItem
	targets []cnameTarget
}

type cnameTarget struct {
	name string
	ttl  time.Duration
}

// walkChain follows the CNAME chain of qname (normalized) through an
// answer section. The chain is single: each name on it leads to exactly
// one target, and at a name with CNAMEs to two different targets (a
// branching answer) it ends, so one answer cannot fan out into many
// names. Only records owned by a name on the chain are kept; an A/AAAA of
// the chain is learned unless its address is special (ruleset.IsSpecial:
// a rebinding answer is passed on to the client but opens nothing), with
// the smaller of its TTL and the chain's, clamped. The chain's targets
// are returned with the chain's TTL up to them (cnameTTL); a TTL of 0
// admits nothing. Whether the targets are admitted at all is forward's
// decision (only for a listed question name).
func walkChain(qname string, rrs []dns.RR) chainResult {
	const noLimit = ^uint32(0)
	type link struct {
		target string
		ttl    uint32
		branch bool
	}
	links := map[string]*link{}
	for _, rr := range rrs {
		c, ok := rr.(*dns.CNAME)
		if !ok || c.Hdr.Class != dns.ClassINET {
			continue
		}
		owner, ok1, _ := normalizeName(c.Hdr.Name)
		target, ok2, _ := normalizeName(c.Target)
		if !ok1 || !ok2 {
			continue
		}
		switch l := links[owner]; {
		case l == nil:
			links[owner] = &link{target: target, ttl: c.Hdr.Ttl}
		case l.target != target:
			l.branch = true
		default:
			l.ttl = min(l.ttl, c.Hdr.Ttl)
		}
	}
	ttl := map[string]uint32{qname: noLimit}
	var res chainResult
	for cur, hop := qname, 0; hop < maxChain; hop++ {
		l := links[cur]
		if l == nil || l.branch {
			break
		}
		if _, seen := ttl[l.target]; seen { // a loop
			break
		}
		t := min(ttl[cur], l.ttl)
		ttl[l.target] = t
		if t > 0 {
			res.targets = append(res.targets, cnameTarget{name: l.target, ttl: cnameTTL(t)})
		}
		cur = l.target
	}
	for _, rr := range rrs {
		h := rr.Header()
		owner, ok, _ := normalizeName(h.Name)
		t, onChain := ttl[owner]
		if !ok || !onChain || h.Class != dns.ClassINET {
			continue
		}
		res.kept = append(res.kept, rr)
		var a netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			a, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			if ip := v.AAAA.To16(); ip != nil {
				a = netip.AddrFrom16([16]byte(ip))
			}
		default:
			continue
		}
		if !a.IsValid() || ruleset.IsSpecial(a) {
			continue
		}
		res.learn = append(res.learn, learnItem{addr: a, ttl: clampTTL(min(t, h.Ttl))})
	}
	return res
}

// cnameTTL is how long a CNAME target stays admitted: the chain's own
// TTL, no floor (unlike a learned address, a name admitted longer than
// its record says is only a wider channel), capped like a learned one.
func cnameTTL(ttl uint32) time.Duration {
	return time.Duration(min(int64(ttl), ruleset.LearnedMaxTTLSeconds)) * time.Second
}

// forward asks the upstream for q, learns what the answer admits and
// returns the reply for the client (at most limit octets; a larger one is
// truncated with TC set). Any failure is SERVFAIL: in particular an answer
// whose addresses could not be added to the learned sets is not returned,
// since the client could not connect to them anyway.
func (r *Resolver) forward(ctx context.Context, q *query, limit int) []byte {
	if b := r.cached(q, limit); b != nil {
		return b
	}
	if r.rate != nil {
		if ok, n := r.rate.allow(r.now()); !ok {
			if n > 0 {
				r.log.log(slog.LevelWarn, "rate-limited", slog.Int("queries", n), slog.Int("per_second", forwardRate))
			}
			r.noteForwarded(q, dns.RcodeServerFailure, nil)
			return r.localReply(q.req, dns.RcodeServerFailure, false)
		}
	}
	out := new(dns.Msg)
	out.RecursionDesired = true
	out.CheckingDisabled = q.req.CheckingDisabled
	// The normalized name, never the client's spelling: letter case is
	// a side channel to the upstream's authoritative server.
	out.Question = []dns.Question{{Name: dns.Fqdn(q.name), Qtype: q.qtype, Qclass: dns.ClassINET}}
	do := false
	if opt := q.req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	// Only the question and these flags reach the upstream: none of the
	// client's EDNS options, IDs or other sections.
	out.SetEdns0(ednsSize, do)
	resp, err := r.up.exchange(ctx, out)
	if err != nil {
		r.log.log(slog.LevelWarn, "upstream failed", slog.String("name", q.name), slog.String("error", err.Error()))
		r.noteForwarded(q, dns.RcodeServerFailure, nil)
		return r.localReply(q.req, dns.RcodeServerFailure, false)
	}
	res := walkChain(q.name, resp.Answer)
	learn := res.learn[:0]
	for _, it := range res.learn {
		// An address of the host itself is passed on but never learned,
		// like a special one (hostAddrs says why).
		if r.host == nil || !r.host.contains(it.addr) {
			learn = append(learn, it)
		}
	}
	res.learn = learn
	if q.origin == originAsk {
		// Interactive mode, an unlisted name: the answer is passed on
		// (and remembered as the addresses' name by finish), but a
		// connection to it waits for the decider.
		res.learn = nil
	}
	if err := r.learn.add(res.learn, q.origin); err != nil {
		r.log.log(slog.LevelError, "learn failed", slog.String("name", q.name), slog.String("error", err.Error()))
		r.noteForwarded(q, dns.RcodeServerFailure, nil)
		return r.localReply(q.req, dns.RcodeServerFailure, false)
	}
	now := r.now()
	r.mu.Lock()
	current := r.gen == q.gen
	stillAllowed := r.pol.stillAllowed(q.origin)
	// Only the answer to a listed name admits its chain's targets: a name
	// admitted through a CNAME admits no further names (the chain would
	// otherwise reach any zone its owner controls, generation after
	// generation).
	if q.listed && (current || stillAllowed) {
		for _, t := range res.targets {
			r.pol.admitCNAME(t.name, q.origin, t.ttl, now)
		}
	}
	r.mu.Unlock()
	if !current && !stillAllowed {
		// A reload removed the name while its answer was on the way and
		// may have run before the addresses above were learned: drop
		// them again rather than leave them until their timeout.
		r.reloadLearned()
	}
	m := new(dns.Msg)
	m.SetReply(q.req)
	m.Compress = true
	m.Rcode = resp.Rcode
	if m.Rcode > 0xF {
		m.Rcode = dns.RcodeServerFailure
	}
	m.RecursionAvailable = resp.RecursionAvailable
	m.AuthenticatedData = resp.AuthenticatedData && (do || q.req.AuthenticatedData)
	m.Answer = res.kept
	for _, rr := range resp.Ns {
		if _, ok := rr.(*dns.SOA); ok { // negative caching needs it; nothing else does
			m.Ns = append(m.Ns, rr)
		}
	}
	if current {
		r.cache.put(q, m, now)
	}
	return r.finish(q, m, limit)
}

// cached returns the reply to q from the answer cache, or nil.
func (r *Resolver) cached(q *query, limit int) []byte {
	m := r.cache.get(q, r.now())
	if m == nil {
		return nil
	}
	return r.finish(q, m, limit)
}

// finish adds the client's EDNS record, truncates to limit and packs.
// The answer's addresses are remembered as the question name's, for the
// refused-traffic records (a rebinding address is passed on but refused
// when used: its record then names what resolved to it).
func (r *Resolver) finish(q *query, m *dns.Msg, limit int) []byte {
	if r.refused != nil {
		var addrs []netip.Addr
		for _, rr := range m.Answer {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A); ok {
					addrs = append(addrs, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
		r.refused.remember(q.name, addrs)
		r.noteForwarded(q, m.Rcode, addrs)
	}
	if opt := q.req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	if m.Len() > limit {
		m.Truncate(limit)
	}
	b, err := m.Pack()
	if err != nil {
		return r.localReply(q.req, dns.RcodeServerFailure, false)
	}
	return b
}

// noteForwarded puts a forwarded question on record (docs/audit.md,
// Channel shield): in learn mode every answer with addresses is a seen
// record, and an unlisted name's question that is none (interactive mode,
// or learn mode without an address) is a dns-forwarded record, so that a
// DNS channel to the upstream is on record however it is answered. rcode
// is what the client got (SERVFAIL also when the forward rate limit kept
// the question back).
func (r *Resolver) noteForwarded(q *query, rcode int, addrs []netip.Addr) {
	if r.refused == nil {
		return
	}
	qtype := dns.Type(q.qtype).String()
	switch {
	case r.learning && len(addrs) > 0:
		r.refused.seen(q.name, qtype, addrs)
	case q.origin == originAsk || (r.learning && q.origin == originOpen):
		rc, ok := dns.RcodeToString[rcode]
		if !ok {
			rc = strconv.Itoa(rcode)
		}
		r.refused.forwarded(q.name, qtype, rc, addrs)
	}
}
