// Package usage counts what each phantom token with a quota uses, in
// memory, and writes it to the credentials database about once a second
// and at shutdown (docs/credential-proxy.md, Token quotas).
package usage

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/common/tokenid"
)

// DefaultFlushEvery is how often counts are written.
const DefaultFlushEvery = time.Second

// Store is where counts go (a *creddb.DB).
type Store interface {
	AddUsage(ctx context.Context, deltas []creddb.UsageDelta, now time.Time) (gone []string, err error)
}

// Kind names the limit a refusal hit (the 429 body's "quota" member).
type Kind string

// Kinds of limit.
const (
	Requests      Kind = "requests"
	ResponseBytes Kind = "response_bytes"
)

// Refusal says which limit a request hit and how much of it is used.
type Refusal struct {
	Kind  Kind
	Limit int64
	Used  int64
}

// Counter is one token's live usage. Its limits follow the token's latest
// row; its counts start at the row's stored usage.
type Counter struct {
	maxRequests atomic.Int64
	maxBytes    atomic.Int64
	requests    atomic.Int64
	bytes       atomic.Int64
	// warned is set by the first refusal that was logged at WARNING
	// (FirstRefusal): a client looping on 429 does not flood the log.
	warned atomic.Bool
	// written are the counts already in the database; only the flusher
	// (under Tracker.flushMu) touches them.
	writtenRequests, writtenBytes int64
}

// Admit counts one request if the token may send it, or says which limit
// it hit. Concurrent calls never admit more than the request limit.
func (c *Counter) Admit() *Refusal {
	if limit := c.maxBytes.Load(); limit > 0 {
		if used := c.bytes.Load(); used >= limit {
			return &Refusal{Kind: ResponseBytes, Limit: limit, Used: used}
		}
	}
	limit := c.maxRequests.Load()
	for {
		n := c.requests.Load()
		if limit > 0 && n >= limit {
			return &Refusal{Kind: Requests, Limit: limit, Used: n}
		}
		if c.requests.CompareAndSwap(n, n+1) {
			return nil
		}
	}
}

// FirstRefusal reports true once per counter: for the first refusal.
func (c *Counter) FirstRefusal() bool { return !c.warned.Swap(true) }

// AddBytes counts response body bytes streamed to the client and reports
// whether this call took the usage across the byte limit (from under it
// to at or over it: exactly one call per crossing, however many streams
// add at once).
func (c *Counter) AddBytes(n int64) (crossed bool) {
	after := c.bytes.Add(n)
	limit := c.maxBytes.Load()
	return limit > 0 && after >= limit && after-n < limit
}

// OverBytes says whether the byte limit is reached (nil: not): a stream
// of the token other than the one that crossed it is cut, a response that
// has not started is refused (docs/credential-proxy.md, Token quotas).
func (c *Counter) OverBytes() *Refusal {
	limit := c.maxBytes.Load()
	if used := c.bytes.Load(); limit > 0 && used >= limit {
		return &Refusal{Kind: ResponseBytes, Limit: limit, Used: used}
	}
	return nil
}

// Used is the live usage.
func (c *Counter) Used() (requests, bytes int64) { return c.requests.Load(), c.bytes.Load() }

// Tracker holds the counters of every token with a quota that this
// process has seen. Its zero value is not usable: call New.
type Tracker struct {
	store Store
	log   *slog.Logger
	m     sync.Map // token -> *Counter
	// flushMu serialises flushes (the ticker's and the final one).
	flushMu sync.Mutex
}

// New returns a Tracker writing to store; with a nil store it counts in
// memory only (Flush writes nothing).
func New(store Store, log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{store: store, log: log}
}

// Load seeds the counters from the stored rows (creddb.QuotaRows) at
// start and names every malformed row in an ERROR line; those tokens get
// no counter (the proxy refuses them on every request, creddb.ErrBadQuota).
// It returns the number of malformed rows.
func (t *Tracker) Load(rows []creddb.QuotaRow) (bad int) {
	for _, r := range rows {
		if r.Err != nil {
			bad++
			t.log.Error("Token quota row is malformed; the token is refused until the row is fixed or the task's tokens are revoked",
				"token_prefix", tokenid.Show(r.Token), "error", r.Err.Error())
			continue
		}
		t.Counter(r.Token, &r.State)
	}
	return bad
}

// Counter returns tok's counter, made from st (the token's row) the first
// time; later calls take the limits of st (a raised limit counts at once)
// but keep the live counts.
func (t *Tracker) Counter(tok string, st *quota.State) *Counter {
	if v, ok := t.m.Load(tok); ok {
		c := v.(*Counter)
		if c.maxRequests.Load() != st.MaxRequests {
			c.maxRequests.Store(st.MaxRequests)
		}
		if c.maxBytes.Load() != st.MaxResponseBytes {
			c.maxBytes.Store(st.MaxResponseBytes)
		}
		return c
	}
	c := &Counter{writtenRequests: st.UsedRequests, writtenBytes: st.UsedBytes}
	c.maxRequests.Store(st.MaxRequests)
	c.maxBytes.Store(st.MaxResponseBytes)
	c.requests.Store(st.UsedRequests)
	c.bytes.Store(st.UsedBytes)
	v, _ := t.m.LoadOrStore(tok, c)
	return v.(*Counter)
}

// Flush writes what every counter counted since the previous flush, in
// one transaction. A failed write is retried whole by the next flush; a
// token whose row is gone (revoked) is dropped. It returns the number of
// tokens written.
func (t *Tracker) Flush(ctx context.Context) (int, error) {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	type pending struct {
		c    *Counter
		r, b int64
	}
	var deltas []creddb.UsageDelta
	var ps []pending
	t.m.Range(func(k, v any) bool {
		c := v.(*Counter)
		r, b := c.requests.Load(), c.bytes.Load()
		if r != c.writtenRequests || b != c.writtenBytes {
			deltas = append(deltas, creddb.UsageDelta{Token: k.(string), Requests: r - c.writtenRequests, Bytes: b - c.writtenBytes})
			ps = append(ps, pending{c, r, b})
		}
		return true
	})
	if len(deltas) == 0 || t.store == nil {
		return 0, nil
	}
	gone, err := t.store.AddUsage(ctx, deltas, time.Now())
	if err != nil {
		return 0, err
	}
	for _, p := range ps {
		p.c.writtenRequests, p.c.writtenBytes = p.r, p.b
	}
	for _, tok := range gone {
		t.m.Delete(tok)
	}
	return len(deltas), nil
}

// Run flushes every interval until ctx ends, then once more (the final
// write of a clean shutdown: call it after the last request finished).
// A failed flush is logged and retried on the next tick.
func (t *Tracker) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = DefaultFlushEvery
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			t.final()
			return
		case <-tick.C:
		}
		if _, err := t.Flush(context.Background()); err != nil {
			if !failing {
				t.log.Warn("Cannot write token usage to the credentials database; retrying every flush, counts stay in memory",
					"error", err.Error())
			}
			failing = true
		} else if failing {
			t.log.Info("Token usage written again")
			failing = false
		}
	}
}

func (t *Tracker) final() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := t.Flush(ctx); err != nil {
		t.log.Error("Cannot write token usage at shutdown; the counts of the last second are lost", "error", err.Error())
	}
}
