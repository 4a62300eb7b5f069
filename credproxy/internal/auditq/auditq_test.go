package auditq

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
)

// rec is a record as a daemon makes it.
type rec struct {
	G, I int
	Late bool
}

func enc(b []byte, r *rec) ([]byte, error) {
	j, err := json.Marshal(audit.Record{V: 1, Time: time.Now(), Channel: "proxy", Event: "request", Outcome: "ok",
		Fields: map[string]any{"g": r.G, "i": r.I, "late": r.Late}})
	return append(append(b, j...), '\n'), err
}

// TestCloseLosesNothing: records put from many goroutines, through a queue
// smaller than the burst, are all on disk once Close returns; a record put
// after Close is written too.
func TestCloseLosesNothing(t *testing.T) {
	for _, size := range []int{1, 16, 0} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit", "proxy.jsonl")
			w, err := audit.Open(path, audit.Options{})
			if err != nil {
				t.Fatal(err)
			}
			q := New(w, enc, size, nil)
			var wg sync.WaitGroup
			const workers, each = 8, 200
			for g := 0; g < workers; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < each; i++ {
						q.Put(rec{G: g, I: i})
					}
				}(g)
			}
			wg.Wait()
			q.Close()
			q.Put(rec{Late: true})
			q.Close()
			recs, err := audit.ReadFile(path, func(m string) { t.Error(m) })
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != workers*each+1 {
				t.Fatalf("%d records on disk, want %d", len(recs), workers*each+1)
			}
			seen := map[string]bool{}
			for _, r := range recs {
				seen[fmt.Sprint(r.Fields["g"], r.Fields["i"], r.Fields["late"])] = true
			}
			if len(seen) != workers*each+1 {
				t.Errorf("%d distinct records, want %d", len(seen), workers*each+1)
			}
		})
	}
}

// TestNilWriter: a queue over a nil Writer (audit off) accepts and drops.
func TestNilWriter(t *testing.T) {
	q := New(nil, enc, 0, nil)
	q.Put(rec{})
	q.Close()
}

// BenchmarkPut is what a request pays to hand its record over.
func BenchmarkPut(b *testing.B) {
	w, err := audit.Open(filepath.Join(b.TempDir(), "a.jsonl"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	q := New(w, enc, 0, nil)
	r := rec{G: 1, I: 2}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.Put(r)
	}
	b.StopTimer()
	q.Close()
}
