package nfqueue_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/shield-hook/internal/nflog"
	"terok.dev/sandbox/shield-hook/internal/nfqueue"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/nstest"
)

const (
	kQueue = 7
	kPort  = 9999
)

// kernelNS is a scratch network namespace whose output chain queues UDP
// to 127.0.0.1:kPort to queue kQueue without bypass (as the interactive
// ruleset does), with a receiver and a sender socket made inside it.
type kernelNS struct {
	name   string
	ns     *nsexec.NS
	rx, tx *net.UDPConn
}

func newKernelNS(t *testing.T) *kernelNS {
	t.Helper()
	n := nstest.New(t, fmt.Sprintf("hknq-%d", os.Getpid()))
	k := &kernelNS{name: n.Name, ns: n.NS}
	// The NFQUEUE target without --queue-bypass, through nft's xtables
	// compatibility (this kernel may lack the native queue expression).
	n.Exec(t, "iptables-nft", "-A", "OUTPUT", "-p", "udp", "-d", "127.0.0.1",
		"--dport", fmt.Sprint(kPort), "-j", "NFQUEUE", "--queue-num", fmt.Sprint(kQueue))
	err := n.Do(func() error {
		var err error
		if k.rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kPort}); err != nil {
			return err
		}
		k.tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: kPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.rx.Close(); _ = k.tx.Close() })
	return k
}

// open binds the queue inside the namespace.
func (k *kernelNS) open(t *testing.T) *nfqueue.Conn {
	t.Helper()
	var q *nfqueue.Conn
	if err := k.ns.Do(func() (err error) { q, err = nfqueue.Open(kQueue); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func (k *kernelNS) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := k.tx.Write([]byte(msg)); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
}

// next is the next datagram the receiver gets ("" if none within wait).
func (k *kernelNS) next(t *testing.T, wait time.Duration) string {
	t.Helper()
	_ = k.rx.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 64)
	n, err := k.rx.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// held receives the next held packet and checks it is our datagram.
func held(t *testing.T, q *nfqueue.Conn) nfqueue.Packet {
	t.Helper()
	_ = q.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []nfqueue.Packet
	for len(got) == 0 {
		if err := q.Receive(func(p nfqueue.Packet) { got = append(got, p) }); err != nil {
			t.Fatalf("receive: %v", err)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d packets held, want 1", len(got))
	}
	p := got[0]
	d, err := nflog.Decode(p.Payload)
	if err != nil {
		t.Fatalf("held packet does not decode: %v", err)
	}
	if p.HWProto != 0x0800 || d.Dst != netip.MustParseAddr("127.0.0.1") || d.Proto != "udp" || d.DPort != kPort {
		t.Fatalf("held packet %+v decodes as %+v", p, d)
	}
	return p
}

// TestKernelVerdicts runs against the kernel: an accepted packet arrives,
// a dropped one never does (the receiver's next datagram is the one after
// it), and with no process holding the queue, or one closed with a packet
// held, packets are dropped rather than passed (no bypass, no fail-open).
func TestKernelVerdicts(t *testing.T) {
	k := newKernelNS(t)
	q := k.open(t)

	k.send(t, "one")
	if err := q.Accept(held(t, q).ID); err != nil {
		t.Fatal(err)
	}
	if got := k.next(t, 5*time.Second); got != "one" {
		t.Fatalf("after accept: got %q, want one", got)
	}

	k.send(t, "two")
	if err := q.Drop(held(t, q).ID); err != nil {
		t.Fatal(err)
	}
	k.send(t, "three")
	if err := q.Accept(held(t, q).ID); err != nil {
		t.Fatal(err)
	}
	if got := k.next(t, 5*time.Second); got != "three" {
		t.Fatalf("after drop, accept: got %q, want three (two dropped)", got)
	}

	// Held when the queue's holder goes away: the kernel drops it.
	k.send(t, "four")
	held(t, q)
	_ = q.Close()
	// Nobody holds the queue: dropped, not bypassed.
	k.send(t, "five")

	q = k.open(t)
	k.send(t, "six")
	if err := q.Accept(held(t, q).ID); err != nil {
		t.Fatal(err)
	}
	if got := k.next(t, 5*time.Second); got != "six" {
		t.Fatalf("after the holder closed: got %q, want six (four and five dropped)", got)
	}
}

// TestKernelMaxHeld: a flood with no verdicts leaves at most MaxHeld
// packets held; the rest are dropped by the kernel, not passed.
func TestKernelMaxHeld(t *testing.T) {
	k := newKernelNS(t)
	q := k.open(t)
	for i := 0; i < nfqueue.MaxHeld+50; i++ {
		k.send(t, "flood")
	}
	var n int
	_ = q.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		err := q.Receive(func(nfqueue.Packet) { n++ })
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != nfqueue.MaxHeld {
		t.Fatalf("%d packets held, want MaxHeld = %d", n, nfqueue.MaxHeld)
	}
	if got := k.next(t, 200*time.Millisecond); got != "" {
		t.Fatalf("a packet beyond the queue passed: %q", got)
	}
}

// TestKernelDropCount: the packets the kernel drops for a full queue are
// counted in the namespace's stats table, which Stats reads; before the
// queue is bound there is no line for it.
func TestKernelDropCount(t *testing.T) {
	k := newKernelNS(t)
	var st *nfqueue.Stats
	if err := k.ns.Do(func() (err error) { st, err = nfqueue.OpenStats(kQueue); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if _, ok, err := st.Dropped(); err != nil || ok {
		t.Fatalf("before the bind: ok %v, err %v; want no line", ok, err)
	}
	k.open(t)
	const extra = 50
	for i := 0; i < nfqueue.MaxHeld+extra; i++ {
		k.send(t, "flood")
	}
	n, ok, err := st.Dropped()
	if err != nil || !ok || n != extra {
		t.Fatalf("dropped %d (line %v, %v), want %d", n, ok, err, extra)
	}
}

// TestKernelRepeatMarked: a held packet handed back with a mark
// (RepeatMarked, NF_REPEAT) runs through the chain again from its start.
// Without a rule for the mark the chain queues it again and it comes back
// carrying the mark, so a holder can tell it from a new packet and drop it
// (no loop); with a reject of marked packets at the chain's head it is
// rejected: it never arrives, is not queued again, and the sender learns
// at once (the ICMP admin-prohibited error, EHOSTUNREACH).
func TestKernelRepeatMarked(t *testing.T) {
	const mark = 0x7e5d0052
	k := newKernelNS(t)
	q := k.open(t)

	k.send(t, "again")
	p := held(t, q)
	if p.Mark != 0 {
		t.Fatalf("a new packet carries mark %#x", p.Mark)
	}
	if err := q.RepeatMarked(p.ID, mark); err != nil {
		t.Fatal(err)
	}
	back := held(t, q)
	if back.Mark != mark || back.ID == p.ID {
		t.Fatalf("repeated packet back as %+v, want a new id with mark %#x", back, uint32(mark))
	}
	if err := q.Drop(back.ID); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command("ip", "netns", "exec", k.name, "iptables-nft", "-I", "OUTPUT", "1", "-m", "mark",
		"--mark", fmt.Sprint(mark), "-j", "REJECT", "--reject-with", "icmp-admin-prohibited").CombinedOutput(); err != nil {
		t.Fatalf("reject rule: %v: %s", err, out)
	}
	k.send(t, "refused")
	if err := q.RepeatMarked(held(t, q).ID, mark); err != nil {
		t.Fatal(err)
	}
	_ = k.tx.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := k.tx.Read(make([]byte, 16)); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("sender after the marked reject: %v, want EHOSTUNREACH", err)
	}
	_ = q.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var again []nfqueue.Packet
	if err := q.Receive(func(p nfqueue.Packet) { again = append(again, p) }); !errors.Is(err, os.ErrDeadlineExceeded) || len(again) > 0 {
		t.Fatalf("the rejected packet was queued again: %v %+v", err, again)
	}
	k.send(t, "after")
	if err := q.Accept(held(t, q).ID); err != nil {
		t.Fatal(err)
	}
	if got := k.next(t, 5*time.Second); got != "after" {
		t.Fatalf("got %q, want after (again and refused never arrive)", got)
	}
}

// TestKernelTableSwapDropsHeld: deleting the table whose chain queued a
// packet (as shield up, down and quarantine replace the shield's table)
// drops the packets held: a verdict for one afterwards is refused
// (ENOENT) and the packet never arrives, so a held packet never meets a
// table it was not queued by.
func TestKernelTableSwapDropsHeld(t *testing.T) {
	k := newKernelNS(t)
	q := k.open(t)
	k.send(t, "held")
	p := held(t, q)
	if out, err := exec.Command("ip", "netns", "exec", k.name, "nft", "delete", "table", "ip", "filter").CombinedOutput(); err != nil {
		t.Fatalf("delete table: %v: %s", err, out)
	}
	if err := q.Accept(p.ID); err != nil {
		t.Fatal(err)
	}
	_ = q.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ve *nfqueue.VerdictError
	if err := q.Receive(func(nfqueue.Packet) {}); !errors.As(err, &ve) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("verdict after the table went: %v, want the kernel's ENOENT (packet no longer held)", err)
	}
	if got := k.next(t, 300*time.Millisecond); got != "" {
		t.Fatalf("the held packet arrived after its table was deleted: %q", got)
	}
}
