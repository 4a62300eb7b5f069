package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/decider"
	"terok.dev/sandbox/shield-hook/internal/nflog"
	"terok.dev/sandbox/shield-hook/internal/nfqueue"
)

// Interactive approval (docs/shield-resolver.md, Interactive approval):
// the resolver holds the queue, asks the attached decider about each held
// packet and gives the kernel the verdict; every decision is a record
// (event "decision", docs/audit.md), rate-limited per destination like a
// refusal.

// A TCP connection attempt is one question however often its SYN comes
// (docs/shield-resolver.md, Interactive approval). The kernel does not
// retransmit a SYN while the queue still holds it, so the retransmissions
// come after the answer: one the decider refused is refused at once for
// refusedFlowTTL, which covers Linux's default SYN retries
// (tcp_syn_retries 6: the last one 127 s after the first). Should one come
// while its question is open, it waits for the same answer. Only a
// refusal is remembered: a new connection has a new source port, and an
// accepted one reused would get past a "once".
const (
	refusedFlowTTL  = 130 * time.Second
	maxRefusedFlows = 1024
)

// flowKey names a TCP connection attempt.
type flowKey struct {
	src, dst     netip.Addr
	sport, dport uint16
}

// approver owns the queue's reader goroutine and one goroutine per open
// question (at most nfqueue.MaxHeld).
type approver struct {
	q       *nfqueue.Conn
	srv     *decider.Server
	f       *refusals // nil when records are off
	sem     chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}
	onError func(error)
	now     func() time.Time

	mu sync.Mutex
	// waiting holds, per SYN with an open question, the packet IDs of its
	// retransmissions (at most nfqueue.MaxHeld in all: the kernel's bound).
	waiting map[flowKey][]uint32
	// refused holds the SYNs the decider refused, until when.
	refused map[flowKey]time.Time
	// stats counts what the kernel dropped from the full queue (nil when
	// its table cannot be read); dropSeen is the count already put in
	// the records' dropped (watchDrops only), kick wakes watchDrops.
	stats    *nfqueue.Stats
	dropSeen uint64
	kick     chan struct{}
	// returned counts refused packets that came back to the queue
	// (carrying ruleset.RefusedMark): a table without the refused-mark
	// rejects at its head. Each is dropped, never repeated again.
	returned atomic.Uint64
}

// openApprover binds the queue in the calling thread's namespace and makes
// the decider socket in dir.
func openApprover(dir string, f *refusals, onError func(error), logf decider.Logf) (*approver, error) {
	timeout, err := shieldbundle.ReadDecideTimeout(dir)
	if err != nil {
		return nil, err
	}
	q, err := nfqueue.Open(ruleset.NFQueueNum)
	if err != nil {
		return nil, fmt.Errorf("interactive mode: %w", err)
	}
	srv, err := decider.Listen(filepath.Join(dir, shieldbundle.FileDeciderSocket), timeout, logf)
	if err != nil {
		_ = q.Close()
		return nil, fmt.Errorf("interactive mode: %w", err)
	}
	// Opened before the capabilities are dropped, like the sockets.
	stats, err := nfqueue.OpenStats(ruleset.NFQueueNum)
	if err != nil {
		logf(slog.LevelWarn, "packets dropped from a full queue will not be counted", slog.String("error", err.Error()))
		stats = nil
	}
	return startApprover(q, srv, f, onError, stats), nil
}

func startApprover(q *nfqueue.Conn, srv *decider.Server, f *refusals, onError func(error), stats *nfqueue.Stats) *approver {
	ctx, cancel := context.WithCancel(context.Background())
	a := &approver{q: q, srv: srv, f: f, sem: make(chan struct{}, nfqueue.MaxHeld),
		ctx: ctx, cancel: cancel, done: make(chan struct{}), onError: onError, now: time.Now,
		waiting: map[flowKey][]uint32{}, refused: map[flowKey]time.Time{},
		stats: stats, kick: make(chan struct{}, 1)}
	go a.read()
	if stats != nil && f != nil {
		a.wg.Add(1)
		go a.watchDrops()
	}
	return a
}

// watchDrops puts the packets the kernel dropped from the full queue (a
// flood of held destinations past nfqueue.MaxHeld) on record as dropped
// attempts (docs/shield-resolver.md, Interactive approval): it reads the
// kernel's counters once a second while packets are held, and sleeps
// while none are, so an idle container's resolver does not wake for it.
func (a *approver) watchDrops() {
	defer a.wg.Done()
	var t *time.Ticker
	var tc <-chan time.Time
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-a.ctx.Done():
			a.countDrops()
			return
		case <-a.kick:
			if t == nil {
				t = time.NewTicker(time.Second)
				tc = t.C
			}
		case <-tc:
			a.countDrops()
			if len(a.sem) == 0 {
				t.Stop()
				t, tc = nil, nil
			}
		}
	}
}

func (a *approver) countDrops() {
	n, ok, err := a.stats.Dropped()
	if err != nil || !ok {
		return
	}
	if n > a.dropSeen {
		a.f.drop(n - a.dropSeen)
	}
	a.dropSeen = n
}

func (a *approver) read() {
	defer close(a.done)
	for {
		err := a.q.Receive(a.held)
		var ve *nfqueue.VerdictError
		switch {
		case err == nil:
		case errors.Is(err, nfqueue.ErrOverrun), errors.As(err, &ve):
			// An overrun leaves packets held in the kernel until the
			// queue is closed (see nfqueue.ReadBuffer); a refused verdict
			// is for a packet the kernel no longer holds. Neither stops
			// the reader.
			a.error(err)
		case errors.Is(err, net.ErrClosed):
			return
		default:
			a.error(err)
			return
		}
	}
}

func (a *approver) error(err error) {
	if a.onError != nil {
		a.onError(err)
	}
}

// held handles one held packet: it is decoded, then asked about on a
// goroutine of its own, so a slow decider does not stop the next packet
// from being shown.
func (a *approver) held(p nfqueue.Packet) {
	select {
	case a.kick <- struct{}{}:
	default:
	}
	if p.Mark == ruleset.RefusedMark {
		// Refused already (and on record): the chain queued it again
		// instead of rejecting it. Dropped, so a refusal never loops and
		// a refused packet is never accepted.
		a.returned.Add(1)
		a.drop(p.ID)
		return
	}
	d, err := decodeHeld(p)
	if err != nil {
		a.verdict(p.ID, false)
		if a.f != nil {
			a.f.drop(1)
		}
		return
	}
	if d.syn && !a.openFlow(p.ID, d) {
		return // a retransmission: answered with its first SYN, or refused
	}
	select {
	case a.sem <- struct{}{}:
	default:
		// The kernel holds at most MaxHeld, so this is a safety net.
		a.answer(p.ID, d, decider.Answer{Verdict: shieldbundle.VerdictRefuse, Reason: decider.ReasonBusy})
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() { <-a.sem }()
		h := shieldbundle.Held{Proto: d.proto, Dst: d.dst.String(), Port: d.dport, Name: a.f.nameOf(d.dst)}
		a.answer(p.ID, d, a.srv.Ask(a.ctx, h))
	}()
}

// openFlow reports whether the SYN id needs a question of its own: not
// when its question is already open (the retransmission waits for that
// answer) nor when the decider refused it lately (refused here).
func (a *approver) openFlow(id uint32, d heldDest) bool {
	a.mu.Lock()
	if ids, open := a.waiting[d.flow]; open {
		a.waiting[d.flow] = append(ids, id)
		a.mu.Unlock()
		return false
	}
	if until, ok := a.refused[d.flow]; ok {
		if a.now().Before(until) {
			a.mu.Unlock()
			a.f.decision(d, shieldbundle.VerdictRefuse, decider.ReasonDecided)
			a.verdict(id, false)
			return false
		}
		delete(a.refused, d.flow)
	}
	a.waiting[d.flow] = nil
	a.mu.Unlock()
	return true
}

// answer gives packet id, and for a SYN its retransmissions that waited,
// the answer's verdict, each on record before it takes effect.
func (a *approver) answer(id uint32, d heldDest, ans decider.Answer) {
	ids := []uint32{id}
	if d.syn {
		a.mu.Lock()
		ids = append(ids, a.waiting[d.flow]...)
		delete(a.waiting, d.flow)
		if ans.Verdict == shieldbundle.VerdictRefuse && ans.Reason == decider.ReasonDecided {
			a.rememberRefused(d.flow)
		}
		a.mu.Unlock()
	}
	accept := ans.Verdict == shieldbundle.VerdictOnce || ans.Verdict == shieldbundle.VerdictAlways
	for _, id := range ids {
		a.f.decision(d, ans.Verdict, ans.Reason)
		a.verdict(id, accept)
	}
}

// rememberRefused notes a refused SYN (a.mu held), within maxRefusedFlows:
// the expired go first, then any other.
func (a *approver) rememberRefused(k flowKey) {
	now := a.now()
	if len(a.refused) >= maxRefusedFlows {
		for f, until := range a.refused {
			if !now.Before(until) {
				delete(a.refused, f)
			}
		}
	}
	for f := range a.refused {
		if len(a.refused) < maxRefusedFlows {
			break
		}
		delete(a.refused, f)
	}
	a.refused[k] = now.Add(refusedFlowTTL)
}

// verdict accepts packet id or refuses it. NFQUEUE has no reject, so a
// refusal hands the packet back to the start of the output chain marked
// ruleset.RefusedMark (NF_REPEAT), where the ruleset's first rules reject
// it: a TCP connect fails at once with ECONNREFUSED, a datagram's sender
// gets EHOSTUNREACH (docs/shield-resolver.md, Interactive approval).
func (a *approver) verdict(id uint32, accept bool) {
	var err error
	if accept {
		err = a.q.Accept(id)
	} else {
		err = a.q.RepeatMarked(id, ruleset.RefusedMark)
	}
	a.verdictErr(err)
}

// drop discards packet id without a reject.
func (a *approver) drop(id uint32) { a.verdictErr(a.q.Drop(id)) }

func (a *approver) verdictErr(err error) {
	// After stop the queue is closed and the kernel has dropped what it
	// held: nothing to report.
	if err != nil && a.ctx.Err() == nil {
		a.error(err)
	}
}

// stop closes the queue (the kernel drops what is still held), refuses
// the open questions and waits for every goroutine.
func (a *approver) stop() {
	if a == nil {
		return
	}
	a.cancel()
	_ = a.q.Close()
	<-a.done
	a.wg.Wait()
	_ = a.srv.Close()
	if a.stats != nil {
		_ = a.stats.Close()
	}
}

type heldDest struct {
	proto string
	dst   netip.Addr
	dport uint16
	// syn is a TCP connection attempt with both ports, named by flow.
	syn  bool
	flow flowKey
}

func decodeHeld(p nfqueue.Packet) (heldDest, error) {
	d, err := nflog.Decode(p.Payload)
	if err != nil {
		return heldDest{}, err
	}
	h := heldDest{proto: d.Proto, dst: d.Dst.Unmap(), dport: d.DPort}
	if d.SYN && d.SPort != 0 && d.DPort != 0 {
		h.syn = true
		h.flow = flowKey{src: d.Src.Unmap(), dst: h.dst, sport: d.SPort, dport: d.DPort}
	}
	return h, nil
}

// nameOf is the name that last resolved to a in this container ("" if
// none, or records are off: the memory lives with them).
func (f *refusals) nameOf(a netip.Addr) string {
	if f == nil {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, _ := f.names.get(a)
	return n
}

// decision records one decision, rate-limited per destination, verdict
// and reason like the refusals.
func (f *refusals) decision(d heldDest, verdict, reason string) {
	if f == nil {
		return
	}
	f.observe(refusedKey{event: "decision", proto: d.proto, dst: d.dst, dport: d.dport, verdict: verdict, why: reason})
}
