// Package nflog reads the packets the container's ruleset logs to NFLOG
// group ruleset.NFLogGroup (docs/shield-resolver.md, Refused traffic):
// a netlink subscription in the resolver's network namespace and a small
// decoder of the logged packet's IP and transport headers. Everything it
// decodes comes from the container, so the decoder is written for hostile
// input: bounds-checked, no allocation per packet, fuzzed (FuzzDecode).
package nflog

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// IP protocol numbers the decoder names.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// Packet is what a refused-traffic record needs of one logged packet.
type Packet struct {
	// Proto is "tcp", "udp", "icmp", "icmpv6" or "ip-proto-N" for any
	// other transport protocol N.
	Proto string
	Dst   netip.Addr
	// Src and SPort are the source address and TCP or UDP source port
	// (SPort 0 as DPort): with Proto and DPort they name the flow.
	Src   netip.Addr
	SPort uint16
	// DPort is the TCP or UDP destination port; 0 when the packet has none
	// (ICMP, another protocol, a non-first fragment).
	DPort uint16
	// ICMPType is the ICMP or ICMPv6 message type (HasICMP reports whether
	// the packet carried one).
	ICMPType uint8
	HasICMP  bool
	// SYN is a TCP segment with SYN set and ACK clear: a connection attempt.
	SYN bool
}

// Errors of Decode.
var (
	ErrShort   = errors.New("packet too short")
	ErrVersion = errors.New("not an IPv4 or IPv6 packet")
	ErrHeader  = errors.New("malformed IP header")
)

// maxExtHeaders bounds the IPv6 extension-header walk: a hostile packet
// may chain as many as fit in the copied bytes.
const maxExtHeaders = 8

// Decode reads the IP header of b (the packet as the kernel logged it, from
// its IP header on, possibly cut short by the copy range) and the start of
// its transport header. A packet whose IP header is complete but whose
// transport header was cut off decodes with Proto set and no port.
func Decode(b []byte) (Packet, error) {
	if len(b) < 1 {
		return Packet{}, ErrShort
	}
	switch b[0] >> 4 {
	case 4:
		return decode4(b)
	case 6:
		return decode6(b)
	}
	return Packet{}, ErrVersion
}

func decode4(b []byte) (Packet, error) {
	if len(b) < 20 {
		return Packet{}, ErrShort
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return Packet{}, ErrHeader
	}
	if len(b) < ihl {
		return Packet{}, ErrShort
	}
	p := Packet{Dst: netip.AddrFrom4([4]byte(b[16:20])), Src: netip.AddrFrom4([4]byte(b[12:16]))}
	proto := b[9]
	// Only the first fragment carries the transport header.
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		p.Proto = protoName(proto)
		return p, nil
	}
	transport(&p, proto, b[ihl:])
	return p, nil
}

func decode6(b []byte) (Packet, error) {
	if len(b) < 40 {
		return Packet{}, ErrShort
	}
	p := Packet{Dst: netip.AddrFrom16([16]byte(b[24:40])), Src: netip.AddrFrom16([16]byte(b[8:24]))}
	next := b[6]
	rest := b[40:]
	for i := 0; ; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 2 {
				p.Proto = "ipv6-ext"
				return p, nil
			}
			n := (int(rest[1]) + 1) * 8
			next = rest[0]
			if len(rest) < n {
				p.Proto = protoName(next)
				return p, nil
			}
			rest = rest[n:]
		case 44: // fragment
			if len(rest) < 8 {
				p.Proto = "ipv6-ext"
				return p, nil
			}
			next = rest[0]
			if binary.BigEndian.Uint16(rest[2:4])&0xfff8 != 0 {
				p.Proto = protoName(next)
				return p, nil
			}
			rest = rest[8:]
		case 51: // authentication header
			if len(rest) < 2 {
				p.Proto = "ipv6-ext"
				return p, nil
			}
			n := (int(rest[1]) + 2) * 4
			next = rest[0]
			if len(rest) < n {
				p.Proto = protoName(next)
				return p, nil
			}
			rest = rest[n:]
		default:
			transport(&p, next, rest)
			return p, nil
		}
		if i >= maxExtHeaders {
			return Packet{}, ErrHeader
		}
	}
}

// transport fills in the protocol and what its header says, as far as b
// holds it.
func transport(p *Packet, proto uint8, b []byte) {
	p.Proto = protoName(proto)
	switch proto {
	case protoTCP:
		if len(b) >= 4 {
			p.SPort, p.DPort = binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
		}
		if len(b) >= 14 {
			p.SYN = b[13]&0x02 != 0 && b[13]&0x10 == 0
		}
	case protoUDP:
		if len(b) >= 4 {
			p.SPort, p.DPort = binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
		}
	case protoICMP, protoICMPv6:
		if len(b) >= 1 {
			p.ICMPType, p.HasICMP = b[0], true
		}
	}
}

func protoName(proto uint8) string {
	switch proto {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	case protoICMPv6:
		return "icmpv6"
	}
	return "ip-proto-" + strconv.Itoa(int(proto))
}
