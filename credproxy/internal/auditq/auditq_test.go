package auditq

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"terok.dev/sandbox/common/audit"
)

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
			q := New(w, size, nil)
			var wg sync.WaitGroup
			const workers, each = 8, 200
			for g := 0; g < workers; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					for i := 0; i < each; i++ {
						q.Put(audit.Record{Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"g": g, "i": i}})
					}
				}(g)
			}
			wg.Wait()
			q.Close()
			q.Put(audit.Record{Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"late": true}})
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
	q := New(nil, 0, nil)
	q.Put(audit.Record{Channel: "proxy", Event: "request", Outcome: "ok"})
	q.Close()
}

// BenchmarkPut is what a request pays to hand its record over.
func BenchmarkPut(b *testing.B) {
	w, err := audit.Open(filepath.Join(b.TempDir(), "a.jsonl"), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	q := New(w, 0, nil)
	r := audit.Record{Channel: "proxy", Event: "request", Outcome: "ok", Fields: map[string]any{"path": "/v1/messages", "status": 200}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q.Put(r)
	}
	b.StopTimer()
	q.Close()
}
