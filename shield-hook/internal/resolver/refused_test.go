package resolver

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// testRefusals is a refusals without its goroutine: the test drives the
// clock, tick and the queue itself.
func testRefusals(t *testing.T) (*refusals, *time.Time) {
	t.Helper()
	dir := t.TempDir()
	w, err := audit.Open(filepath.Join(dir, refusedFile), refusedFileOptions)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	f := &refusals{
		w: w, id: RecordID{Container: "c1", Project: "demo", Task: "t1"}, dir: dir, now: func() time.Time { return now },
		dests: map[refusedKey]*refusedState{}, newLim: newRateLimiter(newRate, newBurst, now),
		names: newNameMemory(4), queue: make(chan audit.Record, recordQueue), kick: make(chan struct{}, 1),
	}
	return f, &now
}

func drain(f *refusals) []audit.Record {
	var out []audit.Record
	for {
		select {
		case r := <-f.queue:
			out = append(out, r)
		default:
			return out
		}
	}
}

func TestRefusalsRecords(t *testing.T) {
	dst := netip.MustParseAddr("198.51.100.20")
	priv := netip.MustParseAddr("10.0.2.2")
	denied := netip.MustParseAddr("198.51.100.31")
	tests := []struct {
		name   string
		run    func(f *refusals)
		fields map[string]any
		reason string
		event  string
	}{
		{"not allowlisted tcp", func(f *refusals) { f.packet(ruleset.PrefixDenied, "tcp", dst, 443, 0) },
			map[string]any{"proto": "tcp", "dst": "198.51.100.20", "dport": uint16(443), "count": 1}, ReasonNotAllowed, "refused"},
		{"private with a name", func(f *refusals) {
			f.remember("rebind.example.test", []netip.Addr{priv})
			f.packet(ruleset.PrefixPrivate, "udp", priv, 53, 0)
		}, map[string]any{"proto": "udp", "dst": "10.0.2.2", "dport": uint16(53), "count": 1, "name": "rebind.example.test"}, ReasonPrivate, "refused"},
		{"denied by deny.list", func(f *refusals) {
			_ = os.WriteFile(filepath.Join(f.dir, shieldbundle.FileDenyList), []byte("198.51.100.0/27\n"), 0o600)
			f.packet(ruleset.PrefixDenied, "tcp", denied, 22, 0)
		}, map[string]any{"proto": "tcp", "dst": "198.51.100.31", "dport": uint16(22), "count": 1}, ReasonDenied, "refused"},
		{"quarantine", func(f *refusals) {
			_ = os.WriteFile(filepath.Join(f.dir, shieldbundle.FileDenyList), []byte("198.51.100.0/27\n"), 0o600)
			_ = os.WriteFile(filepath.Join(f.dir, shieldbundle.FileQuarantine), nil, 0o600)
			f.packet(ruleset.PrefixDenied, "udp", netip.MustParseAddr("127.0.0.1"), 53, 0)
		}, map[string]any{"proto": "udp", "dst": "127.0.0.1", "dport": uint16(53), "count": 1}, ReasonQuarantine, "refused"},
		{"icmp", func(f *refusals) { f.packet(ruleset.PrefixDenied, "icmp", dst, 0, 9) },
			map[string]any{"proto": "icmp", "dst": "198.51.100.20", "icmp_type": 8, "count": 1}, ReasonNotAllowed, "refused"},
		{"v4-mapped is v4", func(f *refusals) { f.packet(ruleset.PrefixDenied, "tcp", netip.AddrFrom16(dst.As16()), 80, 0) },
			map[string]any{"proto": "tcp", "dst": "198.51.100.20", "dport": uint16(80), "count": 1}, ReasonNotAllowed, "refused"},
		{"dns", func(f *refusals) { f.dnsRefused("Phone-Home.Example.TEST", "TXT") },
			map[string]any{"name": "phone-home.example.test", "qtype": "TXT", "count": 1}, ReasonNotAllowed, "dns-refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := testRefusals(t)
			tt.run(f)
			recs := drain(f)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1", len(recs))
			}
			r := recs[0]
			if r.Channel != "shield" || r.Event != tt.event || r.Outcome != "refused" || r.Reason != tt.reason || r.Container != "c1" || r.Project != "demo" || r.Task != "t1" {
				t.Errorf("record %+v", r)
			}
			if len(r.Fields) != len(tt.fields) {
				t.Errorf("fields %v, want %v", r.Fields, tt.fields)
			}
			for k, v := range tt.fields {
				if r.Fields[k] != v {
					t.Errorf("%s = %#v, want %#v", k, r.Fields[k], v)
				}
			}
		})
	}
}

// TestRefusalsOtherPrefixes: accepted (ALLOWED) and bypass (BYPASS) log
// lines are no refusals.
func TestRefusalsOtherPrefixes(t *testing.T) {
	f, _ := testRefusals(t)
	for _, p := range []string{ruleset.PrefixAllowed, ruleset.PrefixBypass, ruleset.PrefixQueued, "x"} {
		f.packet(p, "tcp", netip.MustParseAddr("198.51.100.20"), 443, 0)
	}
	if recs := drain(f); len(recs) != 0 {
		t.Errorf("records %v", recs)
	}
}

// TestRefusalsRateLimit: the first attempt at once, then one record a
// second with the count since; a quiet destination is forgotten.
func TestRefusalsRateLimit(t *testing.T) {
	f, now := testRefusals(t)
	dst := netip.MustParseAddr("198.51.100.20")
	hit := func(n int) {
		for i := 0; i < n; i++ {
			f.packet(ruleset.PrefixDenied, "tcp", dst, 443, 0)
		}
	}
	counts := func() []any {
		var out []any
		for _, r := range drain(f) {
			out = append(out, r.Fields["count"])
		}
		return out
	}
	hit(5)
	if c := counts(); len(c) != 1 || c[0] != 1 {
		t.Fatalf("first: %v", c)
	}
	*now = now.Add(500 * time.Millisecond)
	f.tick()
	if c := counts(); len(c) != 0 {
		t.Fatalf("within the second: %v", c)
	}
	*now = now.Add(600 * time.Millisecond)
	f.tick()
	if c := counts(); len(c) != 1 || c[0] != 4 {
		t.Fatalf("after a second: %v, want [4]", c)
	}
	*now = now.Add(1100 * time.Millisecond)
	f.tick() // quiet for a second: forgotten
	if len(f.dests) != 0 {
		t.Fatalf("quiet destination kept: %v", f.dests)
	}
	hit(1)
	if c := counts(); len(c) != 1 || c[0] != 1 {
		t.Fatalf("again after a quiet second: %v", c)
	}
}

// TestRefusalsBounds: new destinations past the limiter's burst and past
// the table's size are dropped and counted; the count rides on the next
// written record, or on a record of its own.
func TestRefusalsBounds(t *testing.T) {
	f, now := testRefusals(t)
	for i := 0; i < newBurst+50; i++ {
		f.packet(ruleset.PrefixDenied, "udp", netip.MustParseAddr("198.51.100.20"), uint16(1000+i), 0)
	}
	// The queue holds recordQueue; the rest of the burst stays pending
	// (not lost) for the next tick.
	pending := 0
	for _, st := range f.dests {
		pending += st.pending
	}
	if n := len(f.queue); n != recordQueue || pending != newBurst-recordQueue {
		t.Errorf("%d records queued, %d pending; want %d and %d", n, pending, recordQueue, newBurst-recordQueue)
	}
	if n := f.dropped.Load(); n != 50 {
		t.Errorf("dropped %d, want 50", n)
	}
	rec := <-f.queue
	f.write(rec)
	recs, err := audit.ReadFile(filepath.Join(f.dir, refusedFile), nil)
	if err != nil || len(recs) != 1 || recs[0].Fields["dropped"] != float64(50) {
		t.Fatalf("written %v %v, want dropped 50", recs, err)
	}
	if f.dropped.Load() != 0 {
		t.Error("dropped not reset after it was written")
	}
	// The table's bound: past maxDestinations, new ones are dropped.
	drain(f)
	*now = now.Add(time.Hour) // the bucket is full again
	f.newLim = newRateLimiter(1e9, 1e9, *now)
	for i := 0; len(f.dests) < maxDestinations; i++ {
		f.dnsRefused("n"+time.Duration(i).String()+".test", "A")
		drain(f)
	}
	f.dnsRefused("one-more.test", "A")
	if n := f.dropped.Load(); n != 1 {
		t.Errorf("past the table: dropped %d, want 1", n)
	}
}

func TestNameMemory(t *testing.T) {
	m := newNameMemory(2)
	a, b, c := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3")
	m.put(a, "a.test")
	m.put(b, "b.test")
	m.put(a, "a2.test") // the last name wins, no new slot
	m.put(c, "c.test")  // evicts the oldest slot (a)
	for _, tt := range []struct {
		addr netip.Addr
		name string
		ok   bool
	}{{a, "", false}, {b, "b.test", true}, {c, "c.test", true}} {
		if got, ok := m.get(tt.addr); got != tt.name || ok != tt.ok {
			t.Errorf("get(%s) = %q %v, want %q %v", tt.addr, got, ok, tt.name, tt.ok)
		}
	}
}

// TestRefusalsDropsOnlyRecord: drops alone (undecodable packets, a kernel
// overrun) wake the idle writer goroutine, which writes them as a record
// of their own; stop writes what is pending.
func TestRefusalsDropsOnlyRecord(t *testing.T) {
	dir := t.TempDir()
	f, err := newRefusals(dir, RecordID{Container: "c1"}, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	f.drop(3)
	path := filepath.Join(dir, refusedFile)
	deadline := time.Now().Add(10 * time.Second)
	var recs []audit.Record
	for len(recs) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		recs, _ = audit.ReadFile(path, nil)
	}
	if len(recs) != 1 || recs[0].Fields["dropped"] != float64(3) || recs[0].Fields["count"] != float64(0) || recs[0].Fields["dst"] != nil {
		t.Fatalf("records %+v, want one with count 0 and dropped 3", recs)
	}
	f.dnsRefused("a.test", "A")
	f.dnsRefused("a.test", "A") // pending until the next second, or stop
	f.stop()
	recs, _ = audit.ReadFile(path, nil)
	n := 0
	for _, r := range recs {
		if r.Event == "dns-refused" {
			n += int(r.Fields["count"].(float64))
		}
	}
	if n != 2 {
		t.Errorf("dns-refused counts add up to %d after stop, want 2: %+v", n, recs)
	}
}

// TestLearnRecords: learn mode's LEARNED packets and answered names are
// records of their own (outcome ok, no reason), rate-limited like refusals.
func TestLearnRecords(t *testing.T) {
	f, now := testRefusals(t)
	dst := netip.MustParseAddr("203.0.113.40")
	f.remember("api.example.test", []netip.Addr{dst})
	f.seen("API.Example.TEST", "A", []netip.Addr{dst, netip.MustParseAddr("203.0.113.41"), dst})
	f.seen("empty.example.test", "AAAA", nil) // NODATA: no destination
	for i := 0; i < 3; i++ {
		f.packet(ruleset.PrefixLearned, "tcp", dst, 443, 0)
	}
	recs := drain(f)
	if len(recs) != 2 {
		t.Fatalf("%d records, want seen + learned: %+v", len(recs), recs)
	}
	seen, learned := recs[0], recs[1]
	if seen.Event != EventSeen || seen.Outcome != "ok" || seen.Reason != "" || seen.Project != "demo" ||
		seen.Fields["name"] != "api.example.test" || seen.Fields["qtype"] != "A" || seen.Fields["count"] != 1 {
		t.Errorf("seen %+v", seen)
	}
	if got := seen.Fields["addrs"].([]string); len(got) != 2 || got[0] != "203.0.113.40" || got[1] != "203.0.113.41" {
		t.Errorf("seen addrs %v", got)
	}
	if learned.Event != EventLearned || learned.Outcome != "ok" || learned.Reason != "" || learned.Task != "t1" ||
		learned.Fields["dst"] != "203.0.113.40" || learned.Fields["dport"] != uint16(443) ||
		learned.Fields["name"] != "api.example.test" || learned.Fields["count"] != 1 {
		t.Errorf("learned %+v", learned)
	}
	*now = now.Add(recordInterval)
	f.tick()
	if recs := drain(f); len(recs) != 1 || recs[0].Event != EventLearned || recs[0].Fields["count"] != 2 {
		t.Fatalf("after a second: %+v, want one learned record of count 2", recs)
	}
}

// TestRefusedFloodKeepsFirst: a flood of distinct destinations at the
// limiter's sustained rate (200 new a second after the burst of 400) for
// three simulated minutes writes far more than the file's bound; the
// container's first records survive in refused.jsonl.2, the newest in
// refused.jsonl and .1, within 3 MiB, and a merged read is in order.
func TestRefusedFloodKeepsFirst(t *testing.T) {
	f, now := testRefusals(t)
	const seconds = 180
	sent := 0
	for s := 0; s < seconds; s++ {
		for i := 0; i < 1000; i++ { // more than the limiter lets through
			a := netip.AddrFrom4([4]byte{198, 51, byte(100 + sent>>16&1), byte(sent >> 8)})
			f.packet(ruleset.PrefixDenied, "udp", a, uint16(1+sent%60000), 0)
			sent++
			if i%200 == 199 {
				for _, r := range drain(f) {
					f.write(r)
				}
			}
		}
		*now = now.Add(time.Second)
		f.tick()
		for _, r := range drain(f) {
			f.write(r)
		}
	}
	f.flushAll() // as stop does: pending counts, then what is left as dropped
	for _, r := range drain(f) {
		f.write(r)
	}
	if f.dropped.Load() > 0 {
		f.write(f.base("refused", "refused", f.now()))
	}
	path := filepath.Join(f.dir, refusedFile)
	// seq numbers the written records without a hole inside a file; the
	// first file starts at 1; the jump between .2 and .1 is the records
	// the rotations dropped; the last total is every attempt sent.
	var lastSeq, lastTotal float64
	missing := 0.0
	for _, n := range []string{path + ".2", path + ".1", path} {
		recs, err := audit.ReadFile(n, nil)
		if err != nil || len(recs) == 0 {
			t.Fatalf("%s: %v", n, err)
		}
		for i, r := range recs {
			seq, total := r.Fields["seq"].(float64), r.Fields["total"].(float64)
			want := lastSeq + 1
			if i == 0 && n == path+".1" {
				missing = seq - want
				want = seq
			}
			if seq != want {
				t.Fatalf("%s record %d: seq %v, want %v", n, i, seq, want)
			}
			if i > 0 || n != path+".1" {
				dropped, _ := r.Fields["dropped"].(float64)
				if total != lastTotal+r.Fields["count"].(float64)+dropped {
					t.Fatalf("%s record %d: total %v after %v", n, i, total, lastTotal)
				}
			}
			lastSeq, lastTotal = seq, total
		}
	}
	if lastTotal != float64(sent) || missing <= 0 {
		t.Fatalf("last total %v, want the %d attempts sent; %v records missing between .2 and .1, want some", lastTotal, sent, missing)
	}
	if s, tot := lastNumbers(path); s != uint64(lastSeq) || tot != uint64(lastTotal) {
		t.Fatalf("lastNumbers = %d %d, want %v %v (a restarted resolver goes on from there)", s, tot, lastSeq, lastTotal)
	}
	r2, _ := audit.ReadFile(path+".2", nil)
	r1, _ := audit.ReadFile(path+".1", nil)
	t.Logf("seq %v, total %v, %v records rotated away between .2 (ends %s) and .1 (starts %s)", lastSeq, lastTotal, missing,
		r2[len(r2)-1].Time.Format(time.TimeOnly), r1[0].Time.Format(time.TimeOnly))
	var total int64
	for _, n := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(n)
		if err != nil {
			t.Fatalf("%s: %v (the flood should have rotated twice)", n, err)
		}
		total += st.Size()
	}
	if total > (1+refusedKeep)*refusedMaxBytes {
		t.Fatalf("%d bytes, bound %d", total, (1+refusedKeep)*refusedMaxBytes)
	}
	first, err := audit.ReadFile(path+".2", nil)
	if err != nil || len(first) == 0 {
		t.Fatal(err)
	}
	if got := first[0].Fields["dport"]; got != float64(1) {
		t.Fatalf("refused.jsonl.2 starts with dport %v, want the flood's first destination (1)", got)
	}
	all, err := audit.Merge(func(m string) { t.Error(m) }, path)
	if err != nil {
		t.Fatal(err)
	}
	written := 0
	for i, r := range all {
		if i > 0 && r.Time.Before(all[i-1].Time) {
			t.Fatalf("record %d out of order", i)
		}
		if r.Fields["dst"] != nil {
			written++
		}
	}
	last := all[len(all)-1].Time
	t.Logf("%d attempts in %d s: %d records kept (%d of them in the first file), %d bytes; first %s, last %s",
		sent, seconds, written, len(first), total, all[0].Time.Format(time.TimeOnly), last.Format(time.TimeOnly))
	if last.Before(now.Add(-2 * time.Second)) {
		t.Fatalf("the newest record is from %s, the flood ended %s", last, *now)
	}
}

// TestSeqGaps: the messages lost between two sequence numbers, less the
// overruns already counted one each; the counter wraps; a number that
// goes back (a new group instance) counts nothing.
func TestSeqGaps(t *testing.T) {
	type step struct {
		overruns int
		seq      uint32
		lost     uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{0, 0, 0}, {0, 1, 0}, {0, 2, 0}}},
		{"first message counts nothing", []step{{0, 500, 0}, {0, 501, 0}}},
		{"gap", []step{{0, 10, 0}, {0, 15, 4}}},
		{"gap with overruns counted", []step{{0, 10, 0}, {2, 15, 2}}},
		{"more overruns than lost", []step{{0, 10, 0}, {3, 12, 0}, {0, 13, 0}}},
		{"wrap", []step{{0, 0xfffffffe, 0}, {0, 1, 2}}},
		{"backwards", []step{{0, 100, 0}, {0, 5, 0}, {0, 7, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g seqGaps
			for i, s := range tt.steps {
				g.overruns += uint64(s.overruns)
				if got := g.see(s.seq); got != s.lost {
					t.Fatalf("step %d (seq %d): lost %d, want %d", i, s.seq, got, s.lost)
				}
			}
		})
	}
}

// TestRefusedNumbers: seq and total (docs/shield-resolver.md, Refused
// traffic): a record whose write fails does not take a number and its
// attempts ride on the next record as dropped; a restarted resolver goes
// on from the file's last numbers.
func TestRefusedNumbers(t *testing.T) {
	f, _ := testRefusals(t)
	path := filepath.Join(f.dir, refusedFile)
	dst := netip.MustParseAddr("198.51.100.20")
	rec := func(port uint16, count int) audit.Record {
		r := f.record(refusedKey{event: "refused", proto: "udp", dst: dst, dport: port, prefix: ruleset.PrefixDenied}, count, f.now())
		return r
	}
	f.write(rec(1, 2))
	// A directory where the file was: the write fails (EISDIR, also as root).
	if err := os.Rename(path, path+".keep"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	var errs int
	f.onError = func(error) { errs++ }
	f.write(rec(2, 5))
	if errs != 1 {
		t.Fatalf("%d write errors, want 1", errs)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".keep", path); err != nil {
		t.Fatal(err)
	}
	f.write(rec(3, 1))
	recs, err := audit.ReadFile(path, nil)
	if err != nil || len(recs) != 2 {
		t.Fatalf("%d records (%v), want 2", len(recs), err)
	}
	for i, want := range []map[string]any{
		{"seq": 1.0, "total": 2.0, "dropped": nil},
		{"seq": 2.0, "total": 8.0, "dropped": 5.0},
	} {
		for k, v := range want {
			if recs[i].Fields[k] != v {
				t.Errorf("record %d: %s = %v, want %v", i, k, recs[i].Fields[k], v)
			}
		}
	}
	g, err := newRefusals(f.dir, RecordID{Container: "c1"}, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	g.dnsRefused("next.example.test", "A")
	g.stop()
	recs, err = audit.ReadFile(path, nil)
	if err != nil || len(recs) != 3 || recs[2].Fields["seq"] != 3.0 || recs[2].Fields["total"] != 9.0 {
		t.Fatalf("after a restart: %+v (%v), want a third record with seq 3, total 9", recs, err)
	}
}
