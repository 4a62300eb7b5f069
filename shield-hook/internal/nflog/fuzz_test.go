package nflog

import (
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzDecode feeds arbitrary logged packets (the container chooses every
// octet) to the decoder and the message parser: neither panics, an error
// comes with a zero Packet, a decoded packet has a valid destination of its
// IP version and a port only for TCP and UDP.
func FuzzDecode(f *testing.F) {
	f.Add(ip4("198.51.100.20", protoTCP, 0, tcpHdr(443, 0x02)))
	f.Add(ip4("10.0.0.1", protoICMP, 0, []byte{8, 0}))
	f.Add(ip6("2001:db8:2::20", 0, append([]byte{protoTCP, 0, 0, 0, 0, 0, 0, 0}, tcpHdr(443, 0x02)...)))
	f.Add(ip6("2001:db8:2::20", 44, []byte{protoUDP, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 53}))
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if p != (Packet{}) {
				t.Fatalf("error %v with packet %+v", err, p)
			}
		} else {
			if !p.Dst.IsValid() || p.Proto == "" {
				t.Fatalf("decoded without destination or protocol: %+v", p)
			}
			if (b[0]>>4 == 4) != p.Dst.Is4() {
				t.Fatalf("version %d decoded as %s", b[0]>>4, p.Dst)
			}
			if p.DPort != 0 && p.Proto != "tcp" && p.Proto != "udp" {
				t.Fatalf("port on %s", p.Proto)
			}
			if p.SYN && p.Proto != "tcp" || p.HasICMP && p.Proto != "icmp" && p.Proto != "icmpv6" {
				t.Fatalf("inconsistent packet %+v", p)
			}
		}
		_, _ = ParseMessage(uint16(unix.NFNL_SUBSYS_ULOG<<8|msgPacket), b)
	})
}
