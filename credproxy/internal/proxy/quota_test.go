package proxy

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/credproxy/internal/routes"
	"terok.dev/sandbox/credproxy/internal/usage"
)

// quotaSetup is the real database with benchToken limited by the
// token_quota row values (raw SQL), the proxy with a tracker writing to
// that database, and an upstream that counts what reaches it.
func quotaSetup(t testing.TB, maxRequests, maxBytes any, body string) (proxyURL string, forwarded *atomic.Int64, tr *usage.Tracker, raw *sql.DB) {
	forwarded = &atomic.Int64{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(up.Close)
	db := benchDB(t)
	raw, err := sql.Open("sqlite3", db.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if maxRequests != nil || maxBytes != nil {
		if _, err := raw.Exec(`INSERT INTO token_quota (token, max_requests, max_response_bytes, used_requests, used_bytes, updated_at)
			VALUES (?, ?, ?, 0, 0, 0)`, benchToken, maxRequests, maxBytes); err != nil {
			t.Fatal(err)
		}
	}
	u, _ := url.Parse(up.URL)
	res := db.NewResolver()
	t.Cleanup(func() { res.Close() })
	tr = usage.New(db, nil)
	p := New(Options{Store: benchStore{res, db}, DBConcurrency: -1, Usage: tr,
		Routes: routes.Table{"bench": {Provider: "bench", Scheme: "http", Host: u.Host, AuthHeader: "dynamic"}}})
	t.Cleanup(p.Close)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL, forwarded, tr, raw
}

// TestQuotaParallel: 50 goroutines, 4 requests each, against a 20-request
// quota while the usage is flushed every few milliseconds: exactly 20 are
// forwarded, the other 180 get 429 with the JSON body and no Retry-After,
// and the database ends with used_requests = 20 (run with -race).
func TestQuotaParallel(t *testing.T) {
	target, forwarded, tr, raw := quotaSetup(t, 20, nil, `{"ok":true}`)
	ctx, cancel := context.WithCancel(context.Background())
	flushed := make(chan struct{})
	go func() { tr.Run(ctx, 2*time.Millisecond); close(flushed) }()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				req, _ := http.NewRequest("GET", target+"/v1/messages", nil)
				req.Header.Set("Authorization", "Bearer "+benchToken)
				resp, err := c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					var got quotaBody
					if err := json.Unmarshal(b, &got); err != nil || got.Error != "quota" || got.Route != "bench" ||
						got.Quota != "requests" || got.Limit == nil || *got.Limit != 20 || got.Used == nil || *got.Used != 20 {
						t.Errorf("429 body %s", b)
					}
					if resp.Header.Get("Retry-After") != "" {
						t.Error("429 with Retry-After")
					}
				default:
					t.Errorf("status %d: %s", resp.StatusCode, b)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-flushed
	if ok.Load() != 20 || limited.Load() != 180 || forwarded.Load() != 20 {
		t.Fatalf("200: %d, 429: %d, forwarded: %d; want 20, 180, 20", ok.Load(), limited.Load(), forwarded.Load())
	}
	var used int64
	if err := raw.QueryRow(`SELECT used_requests FROM token_quota WHERE token = ?`, benchToken).Scan(&used); err != nil || used != 20 {
		t.Fatalf("used_requests = %d, %v", used, err)
	}
}

// TestQuotaBytes: the request that crosses the byte limit completes
// whole; the next is refused.
func TestQuotaBytes(t *testing.T) {
	body := string(make([]byte, 600))
	target, forwarded, _, _ := quotaSetup(t, nil, 1000, body)
	get := func() (int, string) {
		req, _ := http.NewRequest("GET", target+"/x", nil)
		req.Header.Set("Authorization", "Bearer "+benchToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i, want := range []int{200, 200, 429, 429} {
		code, b := get()
		if code != want {
			t.Fatalf("request %d: %d, want %d", i, code, want)
		}
		if code == 200 && len(b) != 600 {
			t.Fatalf("request %d: %d bytes, want the whole 600", i, len(b))
		}
		if code == 429 && b != `{"error":"quota","route":"bench","quota":"response_bytes","limit":1000,"used":1200}`+"\n" {
			t.Fatalf("429 body %q", b)
		}
	}
	if forwarded.Load() != 2 {
		t.Fatalf("forwarded %d, want 2", forwarded.Load())
	}
}

// TestQuotaMalformedRow: a row the proxy cannot use refuses the token.
func TestQuotaMalformedRow(t *testing.T) {
	target, forwarded, _, _ := quotaSetup(t, 0, nil, "ok")
	req, _ := http.NewRequest("GET", target+"/x", nil)
	req.Header.Set("Authorization", "Bearer "+benchToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || string(b) != `{"error":"quota","route":"bench","quota":"malformed"}`+"\n" || forwarded.Load() != 0 {
		t.Fatalf("%d %s, forwarded %d", resp.StatusCode, b, forwarded.Load())
	}
}

// TestQuotaBytesParallelStreams: the attack on a byte quota is many
// streams at once, each admitted while the token is still under its
// limit. The stream that crosses the limit completes; every other one is
// cut at its next read, so what the token receives stays near one body
// past the limit instead of one body per stream (20 MiB here before the
// cut). The others are cut mid-body (at the first read: the connection
// closes before the status line), or refused with 429 when the limit was
// reached before their response began; each is recorded with reason quota.
func TestQuotaBytesParallelStreams(t *testing.T) {
	const (
		streams = 20
		chunk   = 16 << 10
		chunks  = 64 // 1 MiB a stream
		limit   = 100 << 10
	)
	arrived := make(chan struct{}, streams)
	all := make(chan struct{})
	var once sync.Once
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		if len(arrived) == streams {
			once.Do(func() { close(all) })
		}
		select { // every stream admitted before any byte flows
		case <-all:
		case <-time.After(10 * time.Second):
		}
		buf := make([]byte, chunk)
		for i := 0; i < chunks; i++ {
			if _, err := w.Write(buf); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(up.Close)
	db := benchDB(t)
	raw, err := sql.Open("sqlite3", db.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Exec(`INSERT INTO token_quota (token, max_requests, max_response_bytes, used_requests, used_bytes, updated_at)
		VALUES (?, NULL, ?, 0, 0, 0)`, benchToken, limit); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.URL)
	res := db.NewResolver()
	t.Cleanup(func() { res.Close() })
	var recs recordingAudit
	p := New(Options{Store: benchStore{res, db}, DBConcurrency: -1, Usage: usage.New(db, nil), Audit: &recs,
		Routes: routes.Table{"bench": {Provider: "bench", Scheme: "http", Host: u.Host, AuthHeader: "dynamic"}}})
	t.Cleanup(p.Close)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)

	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams, MaxConnsPerHost: streams}}
	var wg sync.WaitGroup
	var total, whole, cut atomic.Int64
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", srv.URL+"/stream", nil)
			req.Header.Set("Authorization", "Bearer "+benchToken)
			resp, err := c.Do(req)
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				// Cut at its first read, before its status line had
				// left the proxy's buffer: the connection closes with
				// nothing (whether this or a truncated body happens is
				// scheduling; the quota record below is checked alike).
				cut.Add(1)
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode == 429 {
				// Refused before its first byte: the quota was used up
				// while it was on its way.
				cut.Add(1)
				return
			}
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
				return
			}
			n, err := io.Copy(io.Discard, resp.Body)
			total.Add(n)
			switch {
			case err == nil && n == chunk*chunks:
				whole.Add(1)
			case err != nil:
				cut.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d streams: %d bytes received (limit %d), %d whole, %d cut", streams, total.Load(), limit, whole.Load(), cut.Load())
	if bound := int64(chunk*chunks + limit + streams*2*chunk); total.Load() > bound {
		t.Fatalf("the token received %d bytes with a %d-byte quota; want at most %d (one whole stream past the limit)", total.Load(), limit, bound)
	}
	if whole.Load() != 1 || cut.Load() != streams-1 {
		t.Fatalf("%d whole, %d cut; want the crossing stream whole and the other %d cut", whole.Load(), cut.Load(), streams-1)
	}
	p.Close()
	quota := 0
	for _, e := range recs.entries() {
		if e.Reason == ReasonQuota {
			quota++
		}
	}
	if quota != streams-1 {
		t.Fatalf("%d records with reason quota, want %d", quota, streams-1)
	}
}

// recordingAudit keeps the proxy's audit entries.
type recordingAudit struct {
	mu sync.Mutex
	es []Entry
}

func (r *recordingAudit) Put(e Entry) {
	r.mu.Lock()
	r.es = append(r.es, e)
	r.mu.Unlock()
}

func (r *recordingAudit) entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Entry(nil), r.es...)
}
