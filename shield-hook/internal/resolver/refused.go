package resolver

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nflog"
)

// Refused-traffic records (docs/shield-resolver.md, Refused traffic;
// docs/audit.md, Channel shield). Bounds: a hostile container chooses the
// rate and the variety of what it sends, so every table and every queue
// below has a fixed size, and what does not fit is counted, not kept.
const (
	// refusedFile is the per-container record file in the state directory.
	refusedFile = "refused.jsonl"
	// refusedMaxBytes and refusedKeep bound its disk use: at most
	// (1 + refusedKeep) × refusedMaxBytes = 3 MiB per container. The
	// first file is kept for good (audit.Options.KeepFirst): a flood
	// rotates the middle away, never the container's first records
	// (docs/shield-resolver.md, Refused traffic).
	refusedMaxBytes = 1 << 20
	refusedKeep     = 2
	// recordInterval: a destination gets its first record at once, then
	// at most one a second carrying the count of the attempts since.
	recordInterval = time.Second
	// maxDestinations bounds the table of destinations seen in the last
	// second; attempts to a new destination past it are dropped (counted).
	maxDestinations = 4096
	// newRate, newBurst bound how many new destinations a second get a
	// record (a flood of unique addresses or names): past it, dropped.
	newRate  = 200
	newBurst = 400
	// recordQueue bounds the records waiting for the file.
	recordQueue = 256
	// maxNames bounds the memory of which name last resolved to which
	// address.
	maxNames = 4096
	// flushTick is how often pending counts are looked at.
	flushTick = 250 * time.Millisecond
	// denyRecheck: deny.list is read again at most this often.
	denyRecheck = time.Second
)

// refusedFileOptions are refused.jsonl's bounds: 1 MiB a file, the first
// file kept for good, two more for the newest records.
var refusedFileOptions = audit.Options{MaxBytes: refusedMaxBytes, Keep: refusedKeep, KeepFirst: true}

// Reasons of a refused record (docs/audit.md).
const (
	ReasonPrivate    = "private-range"
	ReasonNotAllowed = "not-allowlisted"
	ReasonDenied     = "denied"
	ReasonQuarantine = "quarantine"
)

// refusedKey is one destination of the rate limit: an address and port
// (with the rule that refused it), or a refused DNS name and type.
type refusedKey struct {
	event  string // audit event: refused, dns-refused
	proto  string
	dst    netip.Addr
	dport  uint16
	icmp   int // ICMP type + 1, 0 when none
	prefix string
	name   string // dns-refused, seen: the normalized name
	qtype  string
	// decision: the verdict and why (the decider chose, or a reason it
	// did not: timeout, no-decider, ...).
	verdict, why string
	addrs        string // seen, dns-forwarded: the answer's addresses, sorted, comma-joined
	rcode        string // dns-forwarded: the answer's rcode
}

// Events of learn mode (docs/audit.md, Channel shield): a connection the
// LEARNED rule let through, and a name the resolver forwarded with the
// addresses it resolved to.
const (
	EventLearned = "learned"
	EventSeen    = "seen"
)

// EventForwarded is a question the resolver sent upstream although no
// allowlist entry admitted its name (docs/audit.md, Channel shield): an
// unlisted name in interactive mode, and in learn mode an answer that is
// no seen record (no address: NXDOMAIN, NODATA, a TXT answer). Without it
// such a question would be a DNS channel out of the container that
// nothing records.
const EventForwarded = "dns-forwarded"

type refusedState struct {
	pending int // attempts not yet in a record
	last    time.Time
}

// refusals turns logged packets and refused names into audit records,
// rate-limited per destination, and writes them with one goroutine.
type refusals struct {
	w   *audit.Writer
	id  RecordID
	dir string
	now func() time.Time

	mu     sync.Mutex
	dests  map[refusedKey]*refusedState
	newLim *rateLimiter
	names  nameMemory
	deny   []netip.Prefix
	denyAt time.Time
	denyMT time.Time
	// quarantined is whether the quarantine marker existed at the last
	// look (refreshDeny).
	quarantined bool

	dropped atomic.Uint64 // attempts in no record since the last written one
	wrote   time.Time     // when the last record was written (loop only)
	// seq and total are the last written record's seq and total (loop
	// only; docs/shield-resolver.md, Refused traffic): a reader finds the
	// records a rotation dropped as a jump of seq, and how many attempts
	// they stood for from total.
	seq, total uint64
	queue      chan audit.Record
	kick       chan struct{} // drop's wake-up of an idle writer goroutine
	done       chan struct{}
	stopped    chan struct{}
	onError    func(error)
}

// newRefusals opens <dir>/refused.jsonl and starts the writer goroutine;
// stop ends it after writing what is pending.
// RecordID names the container in its records: its name, and the
// launch's project and task ids when it has them.
type RecordID struct{ Container, Project, Task string }

// base is a record of event at now, carrying the container's ids.
func (f *refusals) base(event, outcome string, now time.Time) audit.Record {
	return audit.Record{Time: now, Channel: "shield", Event: event, Outcome: outcome,
		Container: f.id.Container, Project: f.id.Project, Task: f.id.Task, Fields: map[string]any{"count": 0}}
}

func newRefusals(dir string, id RecordID, onError func(error)) (*refusals, error) {
	w, err := audit.Open(filepath.Join(dir, refusedFile), refusedFileOptions)
	if err != nil {
		return nil, err
	}
	now := time.Now
	f := &refusals{
		w: w, id: id, dir: dir, now: now,
		dests:  map[refusedKey]*refusedState{},
		newLim: newRateLimiter(newRate, newBurst, now()),
		names:  newNameMemory(maxNames),
		queue:  make(chan audit.Record, recordQueue), kick: make(chan struct{}, 1),
		done: make(chan struct{}), stopped: make(chan struct{}),
		onError: onError,
	}
	f.seq, f.total = lastNumbers(filepath.Join(dir, refusedFile))
	go f.loop()
	return f, nil
}

// packet records one logged packet: DENIED and PRIVATE are refusals,
// LEARNED a connection learn mode let through; any other prefix (an
// accepted connection's ALLOWED, a bypass's BYPASS) is not recorded.
func (f *refusals) packet(prefix, proto string, dst netip.Addr, dport uint16, icmp int) {
	event := "refused"
	switch prefix {
	case ruleset.PrefixDenied, ruleset.PrefixPrivate:
	case ruleset.PrefixLearned:
		event = EventLearned
	default:
		return
	}
	f.observe(refusedKey{event: event, proto: proto, dst: dst.Unmap(), dport: dport, icmp: icmp, prefix: prefix})
}

// seen records (learn mode) a name the resolver answered and the
// addresses of the answer; an answer without addresses (NODATA, a CNAME
// chain cut short) is no destination and not recorded.
func (f *refusals) seen(name, qtype string, addrs []netip.Addr) {
	if f == nil || len(addrs) == 0 {
		return
	}
	if len(name) > 255 {
		name = name[:255]
	}
	f.observe(refusedKey{event: EventSeen, name: strings.ToLower(name), qtype: qtype, addrs: addrList(addrs)})
}

// forwarded records (EventForwarded) an unlisted question the resolver
// forwarded, the rcode its client got and the answer's addresses (none
// for NXDOMAIN, NODATA, a failure).
func (f *refusals) forwarded(name, qtype, rcode string, addrs []netip.Addr) {
	if f == nil {
		return
	}
	if len(name) > 255 {
		name = name[:255]
	}
	f.observe(refusedKey{event: EventForwarded, name: strings.ToLower(name), qtype: qtype, rcode: rcode, addrs: addrList(addrs)})
}

// addrList is addrs unmapped, sorted, deduplicated, at most maxSeenAddrs,
// comma-joined (a refusedKey member).
func addrList(addrs []netip.Addr) string {
	list := make([]string, 0, len(addrs))
	for _, a := range addrs {
		list = append(list, a.Unmap().String())
	}
	slices.Sort(list)
	list = slices.Compact(list)
	if len(list) > maxSeenAddrs {
		list = list[:maxSeenAddrs]
	}
	return strings.Join(list, ",")
}

// maxSeenAddrs bounds the addresses of one seen record (an answer can
// carry hundreds).
const maxSeenAddrs = 16

// dnsRefused records a name the resolver refused.
func (f *refusals) dnsRefused(name, qtype string) {
	if f == nil {
		return
	}
	if len(name) > 255 {
		name = name[:255]
	}
	f.observe(refusedKey{event: "dns-refused", name: strings.ToLower(name), qtype: qtype})
}

// overrun counts one attempt the kernel dropped before the reader saw it
// (one per ENOBUFS report, which does not say how many; the sequence gap
// of the next message counts the rest, seqGaps).
func (f *refusals) overrun() { f.drop(1) }

// drop counts n attempts in no record and wakes the writer goroutine,
// which then writes the count within a second.
func (f *refusals) drop(n uint64) {
	f.dropped.Add(n)
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *refusals) observe(k refusedKey) {
	now := f.now()
	f.mu.Lock()
	st, ok := f.dests[k]
	if ok {
		st.pending++
		f.mu.Unlock()
		return
	}
	if len(f.dests) >= maxDestinations {
		f.mu.Unlock()
		f.drop(1)
		return
	}
	if ok, _ := f.newLim.allow(now); !ok {
		f.mu.Unlock()
		f.drop(1)
		return
	}
	st = &refusedState{pending: 1}
	f.dests[k] = st
	f.emitLocked(k, st, now)
	f.mu.Unlock()
}

// emitLocked queues the record of k's pending attempts. A full queue
// leaves them pending for the next tick (the count is not lost).
func (f *refusals) emitLocked(k refusedKey, st *refusedState, now time.Time) {
	rec := f.record(k, st.pending, now)
	select {
	case f.queue <- rec:
		st.pending, st.last = 0, now
	default:
	}
}

func (f *refusals) record(k refusedKey, count int, now time.Time) audit.Record {
	outcome := "refused"
	if k.event == EventLearned || k.event == EventSeen || k.event == EventForwarded {
		outcome = "ok"
	}
	rec := f.base(k.event, outcome, now)
	rec.Fields["count"] = count
	if k.event == "decision" {
		if k.verdict != shieldbundle.VerdictRefuse {
			rec.Outcome = "ok"
		}
		rec.Reason = k.why
		rec.Fields["verdict"] = k.verdict
	}
	if k.event == EventSeen {
		rec.Fields["name"] = k.name
		rec.Fields["qtype"] = k.qtype
		rec.Fields["addrs"] = strings.Split(k.addrs, ",")
		return rec
	}
	if k.event == EventForwarded {
		rec.Fields["name"] = k.name
		rec.Fields["qtype"] = k.qtype
		rec.Fields["rcode"] = k.rcode
		if k.addrs != "" {
			rec.Fields["addrs"] = strings.Split(k.addrs, ",")
		}
		return rec
	}
	if k.event == "dns-refused" {
		rec.Reason = ReasonNotAllowed
		rec.Fields["name"] = k.name
		rec.Fields["qtype"] = k.qtype
		return rec
	}
	if k.event != "decision" && k.event != EventLearned {
		rec.Reason = f.reason(k, now)
	}
	rec.Fields["proto"] = k.proto
	rec.Fields["dst"] = k.dst.String()
	if k.dport != 0 {
		rec.Fields["dport"] = k.dport
	}
	if k.icmp != 0 {
		rec.Fields["icmp_type"] = k.icmp - 1
	}
	if name, ok := f.names.get(k.dst); ok {
		rec.Fields["name"] = name
	}
	return rec
}

// reason classifies a refusal by its rule's log prefix: PRIVATE is a
// special range (or a DNS forwarder other than the resolver); DENIED is
// the quarantine table while the quarantine marker exists, the explicit
// deny set when deny.list holds the address, otherwise the default-deny
// end of the chain.
func (f *refusals) reason(k refusedKey, now time.Time) string {
	if k.prefix == ruleset.PrefixPrivate {
		return ReasonPrivate
	}
	f.refreshDeny(now)
	if f.quarantined {
		return ReasonQuarantine
	}
	for _, p := range f.deny {
		if p.Contains(k.dst) {
			return ReasonDenied
		}
	}
	return ReasonNotAllowed
}

// refreshDeny re-reads deny.list when it changed and looks for the
// quarantine marker, at most once a second. Called with mu held.
func (f *refusals) refreshDeny(now time.Time) {
	if now.Sub(f.denyAt) < denyRecheck && !f.denyAt.IsZero() {
		return
	}
	f.denyAt = now
	_, err := os.Lstat(filepath.Join(f.dir, shieldbundle.FileQuarantine))
	f.quarantined = err == nil
	path := filepath.Join(f.dir, shieldbundle.FileDenyList)
	st, err := os.Stat(path)
	if err != nil {
		f.deny, f.denyMT = nil, time.Time{}
		return
	}
	if st.ModTime().Equal(f.denyMT) {
		return
	}
	f.denyMT = st.ModTime()
	lines, err := shieldbundle.ReadIPFile(path)
	if err != nil {
		return
	}
	f.deny = f.deny[:0]
	for _, l := range lines {
		if p, err := netip.ParsePrefix(l); err == nil {
			f.deny = append(f.deny, p.Masked())
		} else if a, err := netip.ParseAddr(l); err == nil {
			f.deny = append(f.deny, netip.PrefixFrom(a, a.BitLen()))
		}
	}
}

// tick writes the pending counts of destinations whose last record is a
// second old, and forgets destinations quiet for that long; idle reports
// that the table is empty afterwards.
func (f *refusals) tick() (idle bool) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, st := range f.dests {
		if now.Sub(st.last) < recordInterval {
			continue
		}
		if st.pending == 0 {
			delete(f.dests, k)
			continue
		}
		f.emitLocked(k, st, now)
	}
	return len(f.dests) == 0
}

// flushAll queues every pending count regardless of age (at stop).
func (f *refusals) flushAll() {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, st := range f.dests {
		if st.pending > 0 {
			rec := f.record(k, st.pending, now)
			st.pending = 0
			select {
			case f.queue <- rec:
			default:
				f.dropped.Add(uint64(rec.Fields["count"].(int))) // written below, at stop
			}
		}
	}
}

// loop writes the queued records. Its ticker runs only while there is
// something to look at (destinations in the table, a dropped count), so
// an idle container's resolver does not wake up for it.
func (f *refusals) loop() {
	defer close(f.stopped)
	var t *time.Ticker
	var tc <-chan time.Time
	wake := func() {
		if t == nil {
			t = time.NewTicker(flushTick)
			tc = t.C
		}
	}
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case rec := <-f.queue:
			f.write(rec)
			wake()
		case <-f.kick:
			wake()
		case <-tc:
			idle := f.tick()
			// Drops with no record to carry them: a record of its own
			// (no destination, count 0), at most one a second.
			if f.dropped.Load() > 0 && len(f.queue) == 0 && f.now().Sub(f.wrote) >= recordInterval {
				f.write(f.base("refused", "refused", f.now()))
			}
			if idle && f.dropped.Load() == 0 && len(f.queue) == 0 {
				t.Stop()
				t, tc = nil, nil
			}
		case <-f.done:
			f.flushAll()
			for {
				select {
				case rec := <-f.queue:
					f.write(rec)
				default:
					if f.dropped.Load() > 0 {
						f.write(f.base("refused", "refused", f.now()))
					}
					return
				}
			}
		}
	}
}

func (f *refusals) write(rec audit.Record) {
	n := f.dropped.Swap(0)
	if n > 0 {
		rec.Fields["dropped"] = n
	}
	count, _ := rec.Fields["count"].(int)
	rec.Fields["seq"] = f.seq + 1
	rec.Fields["total"] = f.total + uint64(count) + n
	f.wrote = f.now()
	if err := f.w.Write(rec); err != nil {
		// Not on disk: its attempts ride on the next record as dropped,
		// and seq does not advance, so total stays the sum of what the
		// written records stand for.
		f.dropped.Add(uint64(count) + n)
		if f.onError != nil {
			f.onError(err)
		}
		return
	}
	f.seq++
	f.total += uint64(count) + n
}

// lastNumbers returns seq and total of the newest record of path's
// rotation set that has them (the newest non-empty file's last 64 KiB are
// looked at), so that a restarted container's resolver goes on numbering
// where the previous one stopped; (0, 0) when there is none (no file yet,
// or records of a resolver that wrote no seq).
func lastNumbers(path string) (seq, total uint64) {
	for _, name := range []string{path, path + ".1"} {
		b, ok := fileTail(name, 64<<10)
		if !ok {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			r, err := audit.ParseLine([]byte(lines[i]))
			if err != nil {
				continue
			}
			s, ok1 := r.Fields["seq"].(float64)
			t, ok2 := r.Fields["total"].(float64)
			if ok1 && ok2 && s >= 1 && t >= 0 {
				return uint64(s), uint64(t)
			}
			return 0, 0 // the newest record has no numbers: start anew
		}
		return 0, 0
	}
	return 0, 0
}

// fileTail reads at most max octets from the end of name; ok is false for
// a missing or empty file.
func fileTail(name string, max int64) ([]byte, bool) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, false
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil || st.Size() == 0 {
		return nil, false
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	if _, err := fh.ReadAt(b, off); err != nil {
		return nil, false
	}
	return b, true
}

// stop writes what is pending and ends the writer goroutine.
func (f *refusals) stop() {
	if f == nil {
		return
	}
	close(f.done)
	<-f.stopped
}

// remember notes that name resolved to addrs (every address of an answer
// passed to the client, learned or not).
func (f *refusals) remember(name string, addrs []netip.Addr) {
	if f == nil || len(addrs) == 0 {
		return
	}
	f.mu.Lock()
	for _, a := range addrs {
		f.names.put(a.Unmap(), name)
	}
	f.mu.Unlock()
}

// nameMemory maps an address to the name that last resolved to it, for at
// most max addresses; the oldest address is forgotten first.
type nameMemory struct {
	m    map[netip.Addr]string
	ring []netip.Addr
	next int
}

func newNameMemory(max int) nameMemory {
	return nameMemory{m: map[netip.Addr]string{}, ring: make([]netip.Addr, max)}
}

func (n *nameMemory) put(a netip.Addr, name string) {
	if _, ok := n.m[a]; ok {
		n.m[a] = name
		return
	}
	if old := n.ring[n.next]; old.IsValid() {
		delete(n.m, old)
	}
	n.ring[n.next] = a
	n.next = (n.next + 1) % len(n.ring)
	n.m[a] = name
}

func (n *nameMemory) get(a netip.Addr) (string, bool) {
	s, ok := n.m[a]
	return s, ok
}

// Environment the hook passes to the resolver (docs/shield-resolver.md,
// Refused traffic): the container's name for the records, and "off" when
// the container's audit log is off (no records, no NFLOG subscription).
const (
	EnvContainer  = "TEROK_SHIELD_CONTAINER"
	EnvProject    = "TEROK_SHIELD_PROJECT"
	EnvTask       = "TEROK_SHIELD_TASK"
	EnvRefusedLog = "TEROK_SHIELD_REFUSED_LOG"
)

// packetReader owns the NFLOG subscription's goroutine.
type packetReader struct {
	c    *nflog.Conn
	done chan struct{}
}

// seqGaps turns the NFLOG sequence numbers into the count of messages the
// kernel dropped on a full receive buffer (docs/shield-resolver.md,
// Refused traffic): each overrun counts one at once, a lower bound, and
// the next message's gap brings the count to the exact number lost.
// Owned by the reader goroutine.
type seqGaps struct {
	last     uint32
	have     bool
	overruns uint64 // counted since the last message, part of its gap
}

// see returns how many more messages were lost before seq.
func (g *seqGaps) see(seq uint32) uint64 {
	var lost uint64
	if g.have {
		// uint32 arithmetic: the group's counter wraps.
		if gap := seq - g.last - 1; gap < 1<<31 {
			lost = uint64(gap)
		}
	}
	g.last, g.have = seq, true
	if lost > g.overruns {
		lost -= g.overruns
	} else {
		lost = 0
	}
	g.overruns = 0
	return lost
}

// startReader reads logged packets until stop: the refusals (DENIED,
// PRIVATE) go to f, other prefixes are skipped before decoding, a packet
// that does not decode and every message the kernel dropped count as
// dropped.
func startReader(c *nflog.Conn, f *refusals) *packetReader {
	pr := &packetReader{c: c, done: make(chan struct{})}
	var gaps seqGaps
	handle := func(e nflog.Entry) {
		if e.HasSeq {
			if lost := gaps.see(e.Seq); lost > 0 {
				f.drop(lost)
			}
		}
		if e.Prefix != ruleset.PrefixDenied && e.Prefix != ruleset.PrefixPrivate && e.Prefix != ruleset.PrefixLearned {
			return
		}
		p, err := nflog.Decode(e.Payload)
		if err != nil {
			f.drop(1)
			return
		}
		if p.Proto == "icmpv6" && isMLD(p.ICMPType) {
			// The kernel's own multicast listener reports on joining
			// a group: not an attempt of the container's.
			return
		}
		icmp := 0
		if p.HasICMP {
			icmp = int(p.ICMPType) + 1
		}
		f.packet(e.Prefix, p.Proto, p.Dst, p.DPort, icmp)
	}
	go func() {
		defer close(pr.done)
		for {
			err := c.Receive(handle)
			if errors.Is(err, nflog.ErrOverrun) {
				gaps.overruns++
				f.overrun()
				continue
			}
			if err != nil {
				if !errors.Is(err, net.ErrClosed) && f.onError != nil {
					f.onError(err)
				}
				return
			}
		}
	}()
	return pr
}

// isMLD reports an MLD message type (query, report, done, v2 report).
func isMLD(t uint8) bool { return t == 130 || t == 131 || t == 132 || t == 143 }

func (pr *packetReader) stop() {
	if pr == nil {
		return
	}
	_ = pr.c.Close()
	<-pr.done
}
