package resolver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/decider"
	"terok.dev/sandbox/shield-hook/internal/decidertest"
	"terok.dev/sandbox/shield-hook/internal/nfqueue"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/nstest"
)

const approvePort = 9999

// approveNS is a scratch network namespace whose output chain queues UDP
// to 127.0.0.1:approvePort to ruleset.NFQueueNum without bypass, the
// approver holding the queue there, and a receiver and a sender inside it.
type approveNS struct {
	ns     *nsexec.NS
	dir    string
	f      *refusals
	ap     *approver
	rx, tx *net.UDPConn
	errs   chan error
	// attached has a value each time the decider server has taken a
	// decider on: until then a held packet is refused (no-decider) at
	// once, which frees its queue slot and skews what a test counts.
	attached chan struct{}
}

// With reject, the chain starts with the refused-mark rejects of the
// interactive ruleset (ruleset.RefusedRejects, in iptables' words);
// without, a refused packet runs into the queue rule again.
func newApproveNS(t *testing.T, timeout string, reject bool) *approveNS {
	t.Helper()
	n := nstest.New(t, fmt.Sprintf("hkap-%d", os.Getpid()))
	// The NFQUEUE target without --queue-bypass, through nft's xtables
	// compatibility (this kernel may lack the native queue expression).
	n.Exec(t, "iptables-nft", "-A", "OUTPUT", "-p", "udp", "-d", "127.0.0.1",
		"--dport", fmt.Sprint(approvePort), "-j", "NFQUEUE", "--queue-num", fmt.Sprint(ruleset.NFQueueNum))
	n.Exec(t, "iptables-nft", "-A", "OUTPUT", "-p", "tcp", "--syn", "-d", "127.0.0.1",
		"--dport", fmt.Sprint(approvePort), "-j", "NFQUEUE", "--queue-num", fmt.Sprint(ruleset.NFQueueNum))
	if reject {
		mark := []string{"-m", "mark", "--mark", fmt.Sprint(ruleset.RefusedMark)}
		n.Exec(t, append(append([]string{"iptables-nft", "-I", "OUTPUT", "1"}, mark...),
			"-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")...)
		n.Exec(t, append(append([]string{"iptables-nft", "-I", "OUTPUT", "2"}, mark...),
			"-j", "REJECT", "--reject-with", "icmp-admin-prohibited")...)
	}
	ns := n.NS
	f, _ := testRefusals(t)
	if err := os.WriteFile(filepath.Join(f.dir, shieldbundle.FileDecideTimeout), []byte(timeout+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k := &approveNS{ns: ns, dir: f.dir, f: f, errs: make(chan error, 16), attached: make(chan struct{}, 4)}
	err := ns.Do(func() error {
		var err error
		if k.rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: approvePort}); err != nil {
			return err
		}
		if k.tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: approvePort}); err != nil {
			return err
		}
		k.ap, err = openApprover(k.dir, f, func(err error) {
			select {
			case k.errs <- err:
			default:
			}
		}, k.logf)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.ap.stop(); _ = k.rx.Close(); _ = k.tx.Close() })
	return k
}

// logf is the approver's log: it notes when the decider is taken on.
func (k *approveNS) logf(_ slog.Level, msg string, _ ...slog.Attr) {
	if msg == "decider attached" {
		select {
		case k.attached <- struct{}{}:
		default:
		}
	}
}

func (k *approveNS) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := k.tx.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// next is the next datagram received ("" if none within wait).
func (k *approveNS) next(t *testing.T, wait time.Duration) string {
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

// record waits for the decision record with verdict and reason.
func (k *approveNS) record(t *testing.T, verdict, reason string) audit.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range drain(k.f) {
			if r.Event == "decision" && r.Fields["verdict"] == verdict && r.Reason == reason {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no decision record %s/%s", verdict, reason)
	return audit.Record{}
}

// refusedAtOnce: the sender of the last datagram learns of its refusal
// from the ICMP error the refused-mark reject sent (EHOSTUNREACH on the
// connected socket), not from silence. The deadline only bounds a broken
// test: a datagram that was dropped instead leaves the read to time out.
func (k *approveNS) refusedAtOnce(t *testing.T) {
	t.Helper()
	_ = k.tx.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := k.tx.Read(make([]byte, 16)); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("sender of a refused datagram: %v, want EHOSTUNREACH at once", err)
	}
}

func (k *approveNS) attach(t *testing.T) *decidertest.Client {
	t.Helper()
	c := decidertest.Dial(t, filepath.Join(k.dir, shieldbundle.FileDeciderSocket))
	select {
	case <-k.attached:
	case <-time.After(10 * time.Second):
		t.Fatal("the decider server did not take the decider on within 10 s")
	}
	return c
}

// TestApproverKernel: held packets in a real kernel queue, a real decider
// on the socket. Each verdict takes effect (a refused datagram never
// arrives: the next one received is the one after it) and is on record
// with the destination and the name that resolved to it; with no decider,
// no answer in time, or the decider gone, the packet is refused.
func TestApproverKernel(t *testing.T) {
	k := newApproveNS(t, "2s", true)
	k.f.remember("app.example.test", []netip.Addr{netip.MustParseAddr("127.0.0.1")})

	k.send(t, "no-decider")
	k.record(t, shieldbundle.VerdictRefuse, "no-decider")
	k.refusedAtOnce(t)

	d := k.attach(t)
	// The first question also proves the decider is attached.
	k.send(t, "once")
	q := d.Question(t)
	if q.Proto != "udp" || q.Dst != "127.0.0.1" || q.Port != approvePort || q.Name != "app.example.test" || q.TimeoutMS != 2000 {
		t.Fatalf("question %+v", q)
	}
	d.Answer(t, q.ID, shieldbundle.VerdictOnce)
	if got := k.next(t, 5*time.Second); got != "once" {
		t.Fatalf("allowed once: received %q (no-decider must have been dropped)", got)
	}
	r := k.record(t, shieldbundle.VerdictOnce, "decided")
	if r.Outcome != "ok" || r.Channel != "shield" || r.Container != "c1" || r.Fields["dst"] != "127.0.0.1" ||
		r.Fields["dport"] != uint16(approvePort) || r.Fields["name"] != "app.example.test" || r.Fields["proto"] != "udp" {
		t.Fatalf("record %+v", r)
	}

	k.send(t, "refused")
	d.Answer(t, d.Question(t).ID, shieldbundle.VerdictRefuse)
	k.record(t, shieldbundle.VerdictRefuse, "decided")
	k.refusedAtOnce(t)

	k.send(t, "timed-out")
	d.Question(t)
	k.record(t, shieldbundle.VerdictRefuse, "timeout")
	k.refusedAtOnce(t)

	k.send(t, "always")
	d.Answer(t, d.Question(t).ID, shieldbundle.VerdictAlways)
	if got := k.next(t, 5*time.Second); got != "always" {
		t.Fatalf("allowed always: received %q (refused and timed-out must have been dropped)", got)
	}
	k.record(t, shieldbundle.VerdictAlways, "decided")

	// The decider killed with a question open: refused at once, and so is
	// the next connection.
	k.send(t, "gone")
	d.Question(t)
	_ = d.Conn.Close()
	k.record(t, shieldbundle.VerdictRefuse, "decider-gone")
	k.refusedAtOnce(t)
	k.send(t, "after")
	// Same destination, verdict and reason as the first refusal within
	// the record interval: counted for the next record, not a new one.
	key := refusedKey{event: "decision", proto: "udp", dst: netip.MustParseAddr("127.0.0.1"), dport: approvePort,
		verdict: shieldbundle.VerdictRefuse, why: "no-decider"}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		k.f.mu.Lock()
		st := k.f.dests[key]
		pending := st != nil && st.pending == 1
		k.f.mu.Unlock()
		if pending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection after the decider went away was not refused as no-decider")
		}
	}
	if got := k.next(t, 300*time.Millisecond); got != "" {
		t.Fatalf("received %q after the decider went away", got)
	}
	k.refusedAtOnce(t)
	if n := k.ap.returned.Load(); n != 0 {
		t.Fatalf("%d refused packets came back to the queue past the refused-mark rejects", n)
	}
	select {
	case err := <-k.errs:
		t.Fatalf("approver error: %v", err)
	default:
	}
}

// TestApproverSYNRetransmissions, in a chain without the refused-mark
// rejects (a table the verifier would refuse, here to test the resolver's
// own guard): a refused SYN handed back marked is queued again, comes
// back carrying the mark and is dropped, not asked about and not repeated
// (no loop); the client retransmits. One TCP connection attempt is one
// question. While the SYN is held no second question comes (the kernel
// does not retransmit a SYN the queue still holds); after a refusal its
// retransmissions are refused at once without asking (without the memory
// they were each a new question), every one on record. A new connection
// (another source port) is asked about again.
func TestApproverSYNRetransmissions(t *testing.T) {
	k := newApproveNS(t, "10s", false)
	var ln net.Listener
	if err := k.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", approvePort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	dial := func(timeout time.Duration) <-chan error {
		ch := make(chan error, 1)
		go func() {
			ch <- k.ns.Do(func() error {
				c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", approvePort), timeout)
				if err == nil {
					_ = c.Close()
				}
				return err
			})
		}()
		return ch
	}
	d := k.attach(t)
	res := dial(6 * time.Second)
	q := d.Question(t)
	if q.Proto != "tcp" || q.Port != approvePort {
		t.Fatalf("question %+v", q)
	}
	count := func() (n int) {
		for _, r := range drain(k.f) {
			if r.Event == "decision" && r.Fields["proto"] == "tcp" {
				c, _ := strconv.Atoi(fmt.Sprint(r.Fields["count"]))
				n += c
			}
		}
		return n
	}
	d.NoQuestion(t, 2500*time.Millisecond, "a retransmitted SYN was asked about again")
	d.Answer(t, q.ID, shieldbundle.VerdictRefuse)
	if err := <-res; err == nil {
		t.Fatal("refused connection connected")
	}
	d.NoQuestion(t, 300*time.Millisecond, "a refused SYN's retransmission was asked about")
	// The first SYN and at least two retransmissions, refused at once;
	// records are rate-limited, so attempts are counted.
	key := refusedKey{event: "decision", proto: "tcp", dst: netip.MustParseAddr("127.0.0.1"), dport: approvePort,
		verdict: shieldbundle.VerdictRefuse, why: decider.ReasonDecided}
	n, recorded := 0, 0
	for deadline := time.Now().Add(10 * time.Second); n < 3 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		recorded += count()
		k.f.mu.Lock()
		n = recorded
		if st := k.f.dests[key]; st != nil {
			n += st.pending
		}
		k.f.mu.Unlock()
	}
	if n < 3 {
		t.Fatalf("%d decision attempts on record, want the SYN and its 2 retransmissions", n)
	}
	if r := k.ap.returned.Load(); r < 3 {
		t.Fatalf("%d refused SYNs came back marked and were dropped, want one per refusal (3 or more)", r)
	}
	// A new connection: a new question, allowed once.
	res = dial(6 * time.Second)
	q2 := d.Question(t)
	if q2.ID <= q.ID {
		t.Fatalf("second question %+v", q2)
	}
	d.Answer(t, q2.ID, shieldbundle.VerdictOnce)
	if err := <-res; err != nil {
		t.Fatalf("allowed once: %v", err)
	}
	select {
	case err := <-k.errs:
		t.Fatalf("approver error: %v", err)
	default:
	}
}

// TestApproverCountsQueueDrops: a flood past the kernel's queue length
// while the decider sits on its questions: the packets the kernel drops
// (no fail-open) are counted as dropped attempts, so the flood is on
// record though no question was asked about them.
func TestApproverCountsQueueDrops(t *testing.T) {
	k := newApproveNS(t, "10s", false)
	if k.ap.stats == nil {
		t.Fatal("the approver could not open the queue's stats table")
	}
	d := k.attach(t)
	const extra = 50
	for i := 0; i < nfqueue.MaxHeld+extra; i++ {
		k.send(t, "flood")
	}
	d.Question(t) // held and asked: the decider never answers
	deadline := time.Now().Add(10 * time.Second)
	for k.f.dropped.Load() < extra {
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts counted as dropped, want %d (the kernel's drops)", k.f.dropped.Load(), extra)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := k.f.dropped.Load(); n != extra {
		t.Fatalf("%d dropped, want exactly the kernel's %d", n, extra)
	}
}
