package nflog

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ip4 builds an IPv4 header (20 octets, no options) to dst with protocol
// proto and fragment field frag, followed by l4.
func ip4(dst string, proto uint8, frag uint16, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8], b[9] = 64, proto
	copy(b[12:16], []byte{203, 0, 113, 2})
	a := netip.MustParseAddr(dst).As4()
	copy(b[16:20], a[:])
	return append(b, l4...)
}

// ip6 builds an IPv6 header to dst with next header next, followed by rest.
func ip6(dst string, next uint8, rest []byte) []byte {
	b := make([]byte, 40, 40+len(rest))
	b[0] = 0x60
	b[6], b[7] = next, 64
	a := netip.MustParseAddr(dst).As16()
	copy(b[24:40], a[:])
	return append(b, rest...)
}

func tcpHdr(dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], dport)
	b[12], b[13] = 5<<4, flags
	return b
}

func udpHdr(dport uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], 40000)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

func TestDecode(t *testing.T) {
	hop := append([]byte{protoTCP, 0, 0, 0, 0, 0, 0, 0}, tcpHdr(443, 0x02)...) // hop-by-hop, 8 octets
	frag := []byte{protoUDP, 0, 0x00, 0x08, 0, 0, 0, 1}                        // fragment offset 1: no UDP header
	tests := []struct {
		name string
		in   []byte
		want Packet
		err  error
	}{
		{"tcp syn v4", ip4("198.51.100.20", protoTCP, 0, tcpHdr(443, 0x02)), Packet{Proto: "tcp", Dst: netip.MustParseAddr("198.51.100.20"), SPort: 40000, DPort: 443, SYN: true}, nil},
		{"tcp syn-ack v4", ip4("198.51.100.20", protoTCP, 0, tcpHdr(443, 0x12)), Packet{Proto: "tcp", Dst: netip.MustParseAddr("198.51.100.20"), SPort: 40000, DPort: 443}, nil},
		{"udp v4", ip4("198.51.100.20", protoUDP, 0, udpHdr(5353)), Packet{Proto: "udp", Dst: netip.MustParseAddr("198.51.100.20"), SPort: 40000, DPort: 5353}, nil},
		{"icmp echo v4", ip4("10.0.0.1", protoICMP, 0, []byte{8, 0, 0, 0}), Packet{Proto: "icmp", Dst: netip.MustParseAddr("10.0.0.1"), ICMPType: 8, HasICMP: true}, nil},
		{"v4 non-first fragment", ip4("198.51.100.20", protoUDP, 5, udpHdr(53)), Packet{Proto: "udp", Dst: netip.MustParseAddr("198.51.100.20")}, nil},
		{"v4 transport cut off", ip4("198.51.100.20", protoTCP, 0, []byte{1, 2}), Packet{Proto: "tcp", Dst: netip.MustParseAddr("198.51.100.20")}, nil},
		{"v4 other protocol", ip4("198.51.100.20", 132, 0, nil), Packet{Proto: "ip-proto-132", Dst: netip.MustParseAddr("198.51.100.20")}, nil},
		{"tcp syn v6", ip6("2001:db8:2::20", protoTCP, tcpHdr(80, 0x02)), Packet{Proto: "tcp", Dst: netip.MustParseAddr("2001:db8:2::20"), SPort: 40000, DPort: 80, SYN: true}, nil},
		{"udp v6", ip6("2001:db8:2::20", protoUDP, udpHdr(123)), Packet{Proto: "udp", Dst: netip.MustParseAddr("2001:db8:2::20"), SPort: 40000, DPort: 123}, nil},
		{"icmpv6 echo", ip6("fd99::1", protoICMPv6, []byte{128, 0, 0, 0}), Packet{Proto: "icmpv6", Dst: netip.MustParseAddr("fd99::1"), ICMPType: 128, HasICMP: true}, nil},
		{"v6 hop-by-hop then tcp", ip6("2001:db8:2::20", 0, hop), Packet{Proto: "tcp", Dst: netip.MustParseAddr("2001:db8:2::20"), SPort: 40000, DPort: 443, SYN: true}, nil},
		{"v6 non-first fragment", ip6("2001:db8:2::20", 44, append(frag, udpHdr(53)...)), Packet{Proto: "udp", Dst: netip.MustParseAddr("2001:db8:2::20")}, nil},
		{"v6 extension cut off", ip6("2001:db8:2::20", 60, []byte{6, 4}), Packet{Proto: "tcp", Dst: netip.MustParseAddr("2001:db8:2::20")}, nil},
		{"empty", nil, Packet{}, ErrShort},
		{"short v4", ip4("198.51.100.20", protoTCP, 0, nil)[:19], Packet{}, ErrShort},
		{"bad ihl", func() []byte { b := ip4("198.51.100.20", protoTCP, 0, nil); b[0] = 0x44; return b }(), Packet{}, ErrHeader},
		{"ihl past end", func() []byte { b := ip4("198.51.100.20", protoTCP, 0, nil); b[0] = 0x4f; return b }(), Packet{}, ErrShort},
		{"short v6", ip6("2001:db8::1", protoTCP, nil)[:39], Packet{}, ErrShort},
		{"version 5", []byte{0x50, 0, 0, 0}, Packet{}, ErrVersion},
		{"v6 endless options", ip6("2001:db8::1", 60, make([]byte, 8*20)), Packet{}, ErrHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil { // the source address of ip4 and ip6
				tt.want.Src = netip.IPv6Unspecified()
				if tt.in[0]>>4 == 4 {
					tt.want.Src = netip.MustParseAddr("203.0.113.2")
				}
			}
			got, err := Decode(tt.in)
			if err != tt.err || got != tt.want {
				t.Errorf("Decode = %+v, %v; want %+v, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

// nflogMsg encodes a packet message the way the kernel sends one.
func nflogMsg(t testing.TB, prefix string, payload []byte) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Bytes(1, []byte{0x08, 0x00, 3, 0}) // NFULA_PACKET_HDR
	if prefix != "" {
		ae.String(attrPrefix, prefix)
	}
	if payload != nil {
		ae.Bytes(attrPayload, payload)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{unix.AF_INET, 0, 0, 100}, b...)
}

func TestParseMessage(t *testing.T) {
	pkt := ip4("198.51.100.20", protoTCP, 0, tcpHdr(443, 0x02))
	typ := uint16(unix.NFNL_SUBSYS_ULOG<<8 | msgPacket)
	e, ok := ParseMessage(typ, nflogMsg(t, "TEROK_SHIELD_DENIED: ", pkt))
	if !ok || e.Prefix != "TEROK_SHIELD_DENIED" || string(e.Payload) != string(pkt) {
		t.Fatalf("ParseMessage = %+v, %v", e, ok)
	}
	if _, ok := ParseMessage(typ, nflogMsg(t, "TEROK_SHIELD_DENIED: ", nil)); ok {
		t.Error("a message without payload was accepted")
	}
	if _, ok := ParseMessage(uint16(unix.NFNL_SUBSYS_ULOG<<8|msgConfig), nflogMsg(t, "x", pkt)); ok {
		t.Error("a config message was accepted")
	}
	if _, ok := ParseMessage(typ, []byte{2, 0}); ok {
		t.Error("a message shorter than its nfgenmsg was accepted")
	}
	if e.HasSeq {
		t.Error("a message without NFULA_SEQ has a sequence number")
	}
	for _, tt := range []struct {
		attr []byte
		seq  uint32
		has  bool
	}{{[]byte{0, 0, 1, 2}, 258, true}, {[]byte{0xff, 0xff, 0xff, 0xff}, 0xffffffff, true}, {[]byte{1, 2}, 0, false}} {
		msg := nflogMsg(t, "TEROK_SHIELD_DENIED: ", pkt)
		ae := netlink.NewAttributeEncoder()
		ae.Bytes(attrSeq, tt.attr)
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		e, ok := ParseMessage(typ, append(msg, b...))
		if !ok || e.HasSeq != tt.has || e.Seq != tt.seq {
			t.Errorf("NFULA_SEQ %x: %+v %v, want seq %d (%v)", tt.attr, e, ok, tt.seq, tt.has)
		}
	}
}
