package usage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
)

type fakeStore struct {
	mu    sync.Mutex
	calls [][]creddb.UsageDelta
	gone  map[string]bool
	fail  bool
}

func (f *fakeStore) AddUsage(_ context.Context, d []creddb.UsageDelta, _ time.Time) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, errors.New("database is locked")
	}
	f.calls = append(f.calls, d)
	var g []string
	for _, u := range d {
		if f.gone[u.Token] {
			g = append(g, u.Token)
		}
	}
	return g, nil
}

// TestAdmitParallel: 50 goroutines racing for a 20-request quota admit
// exactly 20 (run with -race).
func TestAdmitParallel(t *testing.T) {
	tr := New(nil, nil)
	c := tr.Counter("tok", &quota.State{Limits: quota.Limits{MaxRequests: 20}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, refused := 0, 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				ref := c.Admit()
				mu.Lock()
				if ref == nil {
					admitted++
				} else {
					refused++
					if ref.Kind != Requests || ref.Limit != 20 || ref.Used != 20 {
						t.Errorf("refusal %+v", ref)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if admitted != 20 || refused != 180 {
		t.Fatalf("admitted %d refused %d, want 20 and 180", admitted, refused)
	}
}

// TestBytesLimit: the request that crosses the byte limit was admitted;
// the next one is refused.
func TestBytesLimit(t *testing.T) {
	tr := New(nil, nil)
	c := tr.Counter("tok", &quota.State{Limits: quota.Limits{MaxResponseBytes: 100}, UsedBytes: 40})
	if c.Admit() != nil {
		t.Fatal("refused under the limit")
	}
	c.AddBytes(70) // crosses: 110 of 100
	ref := c.Admit()
	if ref == nil || ref.Kind != ResponseBytes || ref.Used != 110 || ref.Limit != 100 {
		t.Fatalf("refusal %+v", ref)
	}
	if r, _ := c.Used(); r != 1 {
		t.Errorf("requests %d, want 1 (the refused one does not count)", r)
	}
}

// TestFlushDeltas: a flush writes what was counted since the previous
// one (starting from the stored usage), nothing when idle, retries a
// failed write whole, and drops a token whose row is gone; a raised limit
// takes effect on the live counter.
func TestFlushDeltas(t *testing.T) {
	st := &fakeStore{gone: map[string]bool{}}
	tr := New(st, nil)
	bad := tr.Load([]creddb.QuotaRow{
		{Token: "a", State: quota.State{Limits: quota.Limits{MaxRequests: 3}, UsedRequests: 2, UsedBytes: 7}},
		{Token: "b", Err: creddb.ErrBadQuota},
	})
	if bad != 1 {
		t.Fatalf("bad = %d", bad)
	}
	a := tr.Counter("a", &quota.State{Limits: quota.Limits{MaxRequests: 3}})
	if r, b := a.Used(); r != 2 || b != 7 {
		t.Fatalf("seeded usage %d %d", r, b)
	}
	if n, err := tr.Flush(context.Background()); n != 0 || err != nil || len(st.calls) != 0 {
		t.Fatalf("idle flush wrote %d %v", n, err)
	}
	if a.Admit() != nil || a.Admit() == nil {
		t.Fatal("limit 3 with 2 used: want one more, then refused")
	}
	a.AddBytes(5)
	st.fail = true
	if _, err := tr.Flush(context.Background()); err == nil {
		t.Fatal("failed write not reported")
	}
	st.fail = false
	a.AddBytes(1)
	if n, err := tr.Flush(context.Background()); n != 1 || err != nil {
		t.Fatalf("flush %d %v", n, err)
	}
	if got := st.calls[0]; len(got) != 1 || got[0] != (creddb.UsageDelta{Token: "a", Requests: 1, Bytes: 6}) {
		t.Fatalf("delta %+v", got)
	}
	tr.Counter("a", &quota.State{Limits: quota.Limits{MaxRequests: 10}})
	if a.Admit() != nil {
		t.Fatal("raised limit not applied")
	}
	st.gone["a"] = true
	if _, err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := st.calls[1]; len(got) != 1 || got[0].Requests != 1 || got[0].Bytes != 0 {
		t.Fatalf("second delta %+v", got)
	}
	if c := tr.Counter("a", &quota.State{Limits: quota.Limits{MaxRequests: 10}, UsedRequests: 99}); c == a {
		t.Error("counter of a revoked token kept")
	}
}

// TestRunFinalFlush: Run writes once more when its context ends.
func TestRunFinalFlush(t *testing.T) {
	st := &fakeStore{}
	tr := New(st, nil)
	c := tr.Counter("a", &quota.State{Limits: quota.Limits{MaxRequests: 5}})
	c.Admit()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx, time.Hour); close(done) }()
	cancel()
	<-done
	if len(st.calls) != 1 || st.calls[0][0].Requests != 1 {
		t.Fatalf("final flush %+v", st.calls)
	}
}
