package resolver

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// loopbackUpstream runs a raw UDP responder and a miekg/dns TCP server on
// one 127.0.0.1 port. respond gets each UDP query and returns the
// datagrams to send back, in order.
func loopbackUpstream(t *testing.T, respond func(q *dns.Msg) []*dns.Msg, tcp dns.HandlerFunc) (netip.AddrPort, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	var udpQueries atomic.Int32
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			udpQueries.Add(1)
			for _, m := range respond(q) {
				b, _ := m.Pack()
				_, _ = pc.WriteTo(b, from)
			}
		}
	}()
	addr := netip.MustParseAddrPort(pc.LocalAddr().String())
	if tcp != nil {
		l, err := net.Listen("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		srv := &dns.Server{Listener: l, Handler: tcp}
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return addr, &udpQueries
}

func answer(q *dns.Msg, ip string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A " + ip)
	m.Answer = []dns.RR{rr}
	return m
}

func testUpstream(t *testing.T, addr netip.AddrPort) *upstream {
	if os.Geteuid() != 0 {
		t.Skip("SO_MARK needs CAP_NET_ADMIN")
	}
	return &upstream{addr: addr, mark: 0x7e5d0053, timeout: 300 * time.Millisecond, tries: 2}
}

func outQuery(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(ednsSize, false)
	return m
}

// TestUpstreamSkipsForgeries: datagrams with the wrong ID, the wrong
// question or no QR bit are ignored; the genuine answer after them wins.
func TestUpstreamSkipsForgeries(t *testing.T) {
	addr, _ := loopbackUpstream(t, func(q *dns.Msg) []*dns.Msg {
		wrongID := answer(q, "203.0.113.66")
		wrongID.Id ^= 0x5555
		wrongQ := answer(q, "203.0.113.67")
		wrongQ.Question[0].Name = "other.test."
		notResp := answer(q, "203.0.113.68")
		notResp.Response = false
		return []*dns.Msg{wrongID, wrongQ, notResp, answer(q, "198.51.100.7")}
	}, nil)
	u := testUpstream(t, addr)
	resp, err := u.exchange(context.Background(), outQuery("Listed.Test."))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "198.51.100.7" {
		t.Fatalf("accepted %v", resp.Answer)
	}
}

// TestUpstreamTCPOnTruncation: a TC answer over UDP is fetched again over
// TCP.
func TestUpstreamTCPOnTruncation(t *testing.T) {
	addr, _ := loopbackUpstream(t, func(q *dns.Msg) []*dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Truncated = true
		return []*dns.Msg{m}
	}, func(w dns.ResponseWriter, q *dns.Msg) { _ = w.WriteMsg(answer(q, "198.51.100.8")) })
	u := testUpstream(t, addr)
	resp, err := u.exchange(context.Background(), outQuery("big.test."))
	if err != nil || resp.Truncated || len(resp.Answer) != 1 {
		t.Fatalf("%v %v", resp, err)
	}
}

// TestUpstreamTimeout: an upstream that never answers costs tries ×
// timeout, one fresh query per try, then an error.
func TestUpstreamTimeout(t *testing.T) {
	addr, n := loopbackUpstream(t, func(*dns.Msg) []*dns.Msg { return nil }, nil)
	u := testUpstream(t, addr)
	start := time.Now()
	if _, err := u.exchange(context.Background(), outQuery("slow.test.")); err == nil {
		t.Fatal("no error from a silent upstream")
	}
	if took := time.Since(start); took < 2*u.timeout {
		t.Errorf("gave up after %s, want %d tries of %s", took, u.tries, u.timeout)
	}
	if got := n.Load(); got != int32(u.tries) {
		t.Errorf("%d queries sent, want %d", got, u.tries)
	}
}
