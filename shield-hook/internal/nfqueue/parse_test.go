package nfqueue

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const typPacket = uint16(unix.NFNL_SUBSYS_QUEUE<<8 | msgPacket)

// packetMsg builds a packet message as the kernel sends it: nfgenmsg for
// queue 7, then the attributes attrs adds.
func packetMsg(t testing.TB, attrs func(ae *netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{unix.AF_INET, 0, 0, 7}, b...)
}

func pktHdr(id uint32, hw uint16, hook uint8) []byte {
	b := make([]byte, 7)
	binary.BigEndian.PutUint32(b, id)
	binary.BigEndian.PutUint16(b[4:], hw)
	b[6] = hook
	return b
}

func TestParseMessage(t *testing.T) {
	payload := []byte{0x45, 0, 0, 20}
	tests := []struct {
		name string
		typ  uint16
		data []byte
		want Packet
		err  bool
	}{
		{name: "packet", typ: typPacket, data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPacketHdr, pktHdr(0xdeadbeef, 0x0800, 3))
			ae.Uint32(attrMark, 9)
			ae.Bytes(attrPayload, payload)
		}), want: Packet{ID: 0xdeadbeef, HWProto: 0x0800, Hook: 3, Mark: 9, Payload: payload}},
		{name: "attributes in another order and unknown ones", typ: typPacket, data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPayload, payload)
			ae.Uint32(13, 4) // NFQA_CAP_LEN
			ae.Bytes(attrPacketHdr, pktHdr(1, 0x86dd, 3))
		}), want: Packet{ID: 1, HWProto: 0x86dd, Hook: 3, Payload: payload}},
		{name: "no payload", typ: typPacket, data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPacketHdr, pktHdr(1, 0x0800, 3))
		}), err: true},
		{name: "no packet header", typ: typPacket, data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPayload, payload)
		}), err: true},
		{name: "short packet header", typ: typPacket, data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPacketHdr, []byte{0, 0, 0, 1, 8, 0})
			ae.Bytes(attrPayload, payload)
		}), err: true},
		{name: "config message", typ: uint16(unix.NFNL_SUBSYS_QUEUE<<8 | msgConfig), data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPacketHdr, pktHdr(1, 0x0800, 3))
			ae.Bytes(attrPayload, payload)
		}), err: true},
		{name: "nflog subsystem", typ: uint16(unix.NFNL_SUBSYS_ULOG << 8), data: packetMsg(t, func(ae *netlink.AttributeEncoder) {
			ae.Bytes(attrPacketHdr, pktHdr(1, 0x0800, 3))
			ae.Bytes(attrPayload, payload)
		}), err: true},
		{name: "short nfgenmsg", typ: typPacket, data: []byte{2, 0, 0}, err: true},
		{name: "attribute length past the end", typ: typPacket, data: []byte{2, 0, 0, 7, 0xff, 0, 1, 0}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMessage(tc.typ, tc.data)
			if tc.err {
				if !errors.Is(err, ErrMessage) {
					t.Fatalf("err = %v, want ErrMessage (packet %+v)", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.want.ID || got.HWProto != tc.want.HWProto || got.Hook != tc.want.Hook ||
				got.Mark != tc.want.Mark || string(got.Payload) != string(tc.want.Payload) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseMessage feeds arbitrary message bodies (the payload is the
// container's; the rest is the kernel's, but the parser trusts neither):
// no panic, an error comes with a zero Packet, a parsed packet has a
// payload no longer than the message.
func FuzzParseMessage(f *testing.F) {
	f.Add(packetMsg(f, func(ae *netlink.AttributeEncoder) {
		ae.Bytes(attrPacketHdr, pktHdr(7, 0x0800, 3))
		ae.Bytes(attrPayload, []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6})
	}))
	f.Add(packetMsg(f, func(ae *netlink.AttributeEncoder) {
		ae.Bytes(attrPacketHdr, []byte{1})
		ae.Bytes(attrPayload, nil)
	}))
	f.Add([]byte{2, 0, 0, 7, 4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseMessage(typPacket, b)
		if err != nil {
			if p.ID != 0 || p.HWProto != 0 || p.Hook != 0 || p.Mark != 0 || p.Payload != nil {
				t.Fatalf("error %v with packet %+v", err, p)
			}
			return
		}
		if p.Payload == nil || len(p.Payload) > len(b) {
			t.Fatalf("payload of %d octets from a %d-octet message", len(p.Payload), len(b))
		}
	})
}
