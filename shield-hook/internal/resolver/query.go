package resolver

import (
	"encoding/binary"
	"log/slog"
	"strings"

	"github.com/miekg/dns"
)

// Message bounds (docs/shield-resolver.md, Limits).
const (
	// ednsSize is the UDP payload size the resolver advertises upstream
	// and to clients (the DNS flag day 2020 value: no fragmentation).
	ednsSize = 1232
	// maxQuery is the largest query accepted: one question and an OPT
	// record fit in a few hundred octets.
	maxQuery = 4096
	// plainUDPSize is the reply limit for a client without EDNS.
	plainUDPSize = 512
	// maxTCPMessage is the DNS-over-TCP length prefix's limit.
	maxTCPMessage = 65535
)

// prohibitedText is the extended error text of a refused name.
const prohibitedText = "name not on the container's shield allowlist"

// query is a validated client query that is to be forwarded.
type query struct {
	req    *dns.Msg
	name   string // normalized (normalizeName)
	origin string // the allowlist entry that admitted it
	listed bool   // admitted by the allowlist itself (not a CNAME admission or the open marker)
	qtype  uint16
	gen    uint64 // the policy generation that admitted it
}

// forwardedTypes are the query types forwarded for a listed name while the
// shield is up: the ones that yield addresses. Everything else gets an
// empty answer without a packet leaving the namespace (a TXT or NULL
// channel to the upstream is the classic DNS tunnel).
func forwardedType(t uint16, open bool) bool {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeCNAME:
		return true
	case dns.TypeAXFR, dns.TypeIXFR:
		return false
	}
	return open
}

// decide validates one client message and either answers it locally
// (reply != nil), hands it on for forwarding (q != nil) or drops it (both
// nil: not a DNS query at all, or a response, which would only start a
// loop). It never forwards anything but a validated question of an
// admitted name.
func (r *Resolver) decide(pkt []byte) (reply []byte, q *query) {
	if len(pkt) < 12 || len(pkt) > maxQuery {
		return nil, nil
	}
	if pkt[2]&0x80 != 0 { // QR: a response
		return nil, nil
	}
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		return headerReply(pkt, dns.RcodeFormatError), nil
	}
	if req.Opcode != dns.OpcodeQuery {
		return r.localReply(req, dns.RcodeNotImplemented, false), nil
	}
	if len(req.Question) != 1 || len(req.Answer) != 0 || len(req.Ns) != 0 {
		return r.localReply(req, dns.RcodeFormatError, false), nil
	}
	opts := 0
	for _, rr := range req.Extra {
		if _, ok := rr.(*dns.OPT); !ok {
			return r.localReply(req, dns.RcodeFormatError, false), nil
		}
		opts++
	}
	if opts > 1 {
		return r.localReply(req, dns.RcodeFormatError, false), nil
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() != 0 {
		return r.localReply(req, dns.RcodeBadVers, false), nil
	}
	qn := req.Question[0]
	name, ok, tooLong := normalizeName(qn.Name)
	if tooLong {
		return r.localReply(req, dns.RcodeFormatError, false), nil
	}
	if qn.Qclass != dns.ClassINET || !ok {
		r.logRefused(qn)
		return r.localReply(req, dns.RcodeRefused, true), nil
	}
	r.mu.Lock()
	origin, admitted := r.pol.admit(name, r.now())
	_, listed := r.pol.domains.match(name)
	open, gen := r.pol.open, r.gen
	r.mu.Unlock()
	if !admitted {
		r.logRefused(qn)
		return r.localReply(req, dns.RcodeRefused, true), nil
	}
	if !forwardedType(qn.Qtype, open) {
		if origin == originAsk {
			// Interactive mode forwards an unlisted name's address
			// questions only: any other type of it (TXT, NULL: the
			// tunnel's types) is refused as in enforce mode, and on
			// record as such.
			r.refused.dnsRefused(name, dns.Type(qn.Qtype).String())
		}
		// NODATA: the name may exist, this type is not served.
		return r.localReply(req, dns.RcodeSuccess, false), nil
	}
	return nil, &query{req: req, name: name, origin: origin, listed: listed, qtype: qn.Qtype, gen: gen}
}

func (r *Resolver) logRefused(q dns.Question) {
	name := q.Name
	if len(name) > 300 {
		name = name[:300] + "…"
	}
	r.log.log(slog.LevelInfo, "refused", slog.String("name", name),
		slog.String("type", dns.Type(q.Qtype).String()), slog.String("class", dns.Class(q.Qclass).String()))
	r.refused.dnsRefused(strings.TrimSuffix(name, "."), dns.Type(q.Qtype).String())
}

// localReply answers req without asking anyone. An EDNS client gets an
// OPT record back, and a refused name an extended error "Prohibited"
// (RFC 8914) saying why.
func (r *Resolver) localReply(req *dns.Msg, rcode int, prohibited bool) []byte {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Rcode = rcode
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(ednsSize)
		if prohibited {
			opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeProhibited, ExtraText: prohibitedText})
		}
		m.Extra = append(m.Extra, opt)
	} else if rcode > 0xF {
		m.Rcode = dns.RcodeFormatError
	}
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// headerReply answers a message that does not parse: its ID and opcode,
// the response bit, the rcode, no sections.
func headerReply(pkt []byte, rcode int) []byte {
	out := make([]byte, 12)
	copy(out[0:2], pkt[0:2])
	out[2] = 0x80 | pkt[2]&0x78     // QR, opcode
	out[3] = 0x80 | byte(rcode&0xF) // RA, rcode
	binary.BigEndian.PutUint16(out[4:], 0)
	return out
}

// replyLimit is the largest reply the client can take over UDP.
func replyLimit(req *dns.Msg) int {
	opt := req.IsEdns0()
	if opt == nil {
		return plainUDPSize
	}
	n := int(opt.UDPSize())
	if n < plainUDPSize {
		n = plainUDPSize
	}
	if n > ednsSize {
		n = ednsSize
	}
	return n
}
