package integration

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/common/testkit/scrape"
)

// quotaDDL is token_quota as docs/formats.md, Credentials database, has it.
const quotaDDL = `CREATE TABLE IF NOT EXISTS token_quota (
    token              TEXT PRIMARY KEY,
    max_requests       INTEGER,
    max_response_bytes INTEGER,
    used_requests      INTEGER NOT NULL DEFAULT 0,
    used_bytes         INTEGER NOT NULL DEFAULT 0,
    updated_at         INTEGER NOT NULL
);`

// curlStatus sends one request with curl over TCP and returns the status,
// the body and the response headers.
func (e *env) curlStatus(tk, path string) (code, body, headers string) {
	e.t.Helper()
	out, err := exec.Command("curl", "-sS", "-D", "-", "-o", "-", "-w", "\n%{http_code}",
		"-H", "Authorization: Bearer "+tk, e.url(path)).CombinedOutput()
	if err != nil {
		e.t.Fatalf("curl %s: %v %s", path, err, out)
	}
	s := string(out)
	i := strings.LastIndex(s, "\n")
	code, rest := s[i+1:], s[:i]
	if j := strings.Index(rest, "\r\n\r\n"); j >= 0 {
		headers, body = rest[:j], rest[j+4:]
	}
	e.mu.Lock()
	e.seen.WriteString(rest)
	e.mu.Unlock()
	return code, body, headers
}

func (e *env) used(tk string) (requests, bytes int64) {
	e.t.Helper()
	if err := e.db.QueryRow(`SELECT used_requests, used_bytes FROM token_quota WHERE token = ?`, tk).Scan(&requests, &bytes); err != nil {
		e.t.Fatal(err)
	}
	return requests, bytes
}

// TestQuotaWithCurl: the real binary and curl against a loopback
// upstream. A 3-request quota lets 3 through and answers 429 JSON (no
// Retry-After, never the credential) after; a byte quota lets the request
// that crosses it complete and refuses the next; the refusals are audited
// (reason quota) and counted in the metrics; the usage is in token_quota
// after a clean stop, and a restarted proxy keeps counting from it; an
// unlimited token of the same route is untouched.
func TestQuotaWithCurl(t *testing.T) {
	up := newUpstream(t)
	up.handler = func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 400))
	}
	e := newEnv(t, routesJSON("api", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-quota-c0ffee")+`"}`)
	e.exec(quotaDDL)
	reqTok := e.token(tok(900), "default", "api")
	byteTok := e.token(tok(901), "default", "api")
	free := e.token(tok(902), "default", "api")
	e.exec(`INSERT INTO token_quota (token, max_requests, max_response_bytes, updated_at) VALUES (?, 3, NULL, 0)`, reqTok)
	e.exec(`INSERT INTO token_quota (token, max_requests, max_response_bytes, updated_at) VALUES (?, NULL, 1000, 0)`, byteTok)
	ports := testkit.FreePorts(t, 2) // the proxy's and the metrics port, distinct
	e.port = ports[0]
	mport := ports[1]
	e.start(fmt.Sprintf("--metrics-listen=127.0.0.1:%d", mport))

	expect := func(tk, want string) (string, string) {
		t.Helper()
		before := up.count()
		code, body, hdr := e.curlStatus(tk, "/v1/x")
		if code != want {
			t.Fatalf("%s: status %s, want %s (%s)", tk[:12], code, want, body)
		}
		if want == "429" {
			if up.count() != before {
				t.Errorf("refused request was forwarded")
			}
			if strings.Contains(strings.ToLower(hdr), "retry-after") {
				t.Errorf("429 with Retry-After:\n%s", hdr)
			}
		}
		return body, hdr
	}
	for i := 0; i < 3; i++ {
		expect(reqTok, "200")
	}
	if body, _ := expect(reqTok, "429"); body != `{"error":"quota","route":"api","quota":"requests","limit":3,"used":3}`+"\n" {
		t.Errorf("429 body %q", body)
	}
	expect(reqTok, "429")
	expect(byteTok, "200")
	expect(byteTok, "200")
	expect(byteTok, "200") // 1200 of 1000: the crossing request completed
	if body, _ := expect(byteTok, "429"); body != `{"error":"quota","route":"api","quota":"response_bytes","limit":1000,"used":1200}`+"\n" {
		t.Errorf("429 body %q", body)
	}
	for i := 0; i < 5; i++ {
		expect(free, "200")
	}
	fams, _ := scrape.Port(t, mport)
	if got := fams.Sum("terok_proxy_requests_total", map[string]string{"outcome": "refused", "reason": "quota"}); got != 3 {
		t.Errorf("quota refusals in the metrics: %v, want 3", got)
	}
	e.stop()

	if r, b := e.used(reqTok); r != 3 || b != 1200 {
		t.Errorf("request token usage after stop: %d requests %d bytes, want 3, 1200", r, b)
	}
	if r, b := e.used(byteTok); r != 3 || b != 1200 {
		t.Errorf("byte token usage after stop: %d requests %d bytes, want 3, 1200", r, b)
	}
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM token_quota WHERE token = ?`, free).Scan(&n); err != nil || n != 0 {
		t.Errorf("unlimited token got a row: %d %v", n, err)
	}
	var quotaRecs int
	for _, r := range e.auditRecords(e.auditFile) {
		if r.Reason == "quota" {
			quotaRecs++
			if r.Outcome != "refused" || r.Project != "proj" || r.TokenPrefix == "" || r.Fields["status"] != float64(429) {
				t.Errorf("quota record %+v %v", r, r.Fields)
			}
		}
	}
	if quotaRecs != 3 {
		t.Errorf("%d quota audit records, want 3", quotaRecs)
	}

	// Restart: the stored usage is read back. Raising the limit by hand
	// (docs/credential-proxy.md, Token quotas) lets exactly the new ones in.
	e.exec(`UPDATE token_quota SET max_requests = 5 WHERE token = ?`, reqTok)
	e.start()
	expect(reqTok, "200")
	expect(reqTok, "200")
	expect(reqTok, "429")
	expect(byteTok, "429")
	// A running proxy writes about once a second, without a stop.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := e.used(reqTok); r == 5 {
			break
		}
		if time.Now().After(deadline) {
			r, _ := e.used(reqTok)
			t.Fatalf("usage not written while running: %d, want 5", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.stop()
	e.checkNoSecrets()
}

// TestQuotaMalformedRowAtStart: rows another tool wrote badly are named
// at start and their tokens refused (429 malformed), never unlimited; the
// other tokens keep working.
func TestQuotaMalformedRowAtStart(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("api", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-quota-bad")+`"}`)
	e.exec(quotaDDL)
	good := e.token(tok(910), "default", "api")
	var bad []string
	for i, cols := range []string{"0, NULL, 0, 0", "-5, NULL, 0, 0", "'ten', NULL, 0, 0", "NULL, NULL, 0, 0", "3, NULL, -1, 0", "NULL, 2.5, 0, 0"} {
		tk := e.token(tok(911+i), "default", "api")
		e.exec(`INSERT INTO token_quota (token, max_requests, max_response_bytes, used_requests, used_bytes, updated_at) VALUES (?, `+cols+`, 0)`, tk)
		bad = append(bad, tk)
	}
	e.exec(`INSERT INTO token_quota (token, max_requests, updated_at) VALUES (?, 10, 0)`, good)
	e.start()
	for _, tk := range bad {
		before := up.count()
		code, body, _ := e.curlStatus(tk, "/v1/x")
		if code != "429" || body != `{"error":"quota","route":"api","quota":"malformed"}`+"\n" || up.count() != before {
			t.Errorf("%s: %s %q (forwarded %d)", tk[:12], code, body, up.count()-before)
		}
	}
	if code, _, _ := e.curlStatus(good, "/v1/x"); code != "200" {
		t.Errorf("good token: %s", code)
	}
	e.stop()
	logs := e.log()
	if n := strings.Count(logs, "Token quota row is malformed; the token is refused"); n != len(bad) {
		t.Errorf("%d start-up lines for %d bad rows:\n%s", n, len(bad), logs)
	}
	if !strings.Contains(logs, "token_quota row in the credentials database is malformed") {
		t.Errorf("no per-request refusal line:\n%s", logs)
	}
}

// TestQuotaParallelBinary: 50 goroutines with 4 requests each against a
// 20-request quota on the real binary (built with -race under a race
// run): exactly 20 reach the upstream, 180 get 429, and the stored usage
// after the stop is 20.
func TestQuotaParallelBinary(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("api", fmt.Sprintf(`{"upstream": %q}`, up.origin())))
	e.cred("default", "api", `{"type": "api_key", "key": "`+e.secret("REAL-quota-par")+`"}`)
	e.exec(quotaDDL)
	tk := e.token(tok(920), "default", "api")
	e.exec(`INSERT INTO token_quota (token, max_requests, updated_at) VALUES (?, 20, 0)`, tk)
	e.start()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				req, _ := http.NewRequest("GET", e.url("/v1/x"), nil)
				req.Header.Set("Authorization", "Bearer "+tk)
				resp, err := e.client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[200] != 20 || codes[429] != 180 || up.count() != 20 {
		t.Fatalf("statuses %v, upstream saw %d; want 20 x 200, 180 x 429, 20 forwarded", codes, up.count())
	}
	e.stop()
	if r, _ := e.used(tk); r != 20 {
		t.Fatalf("stored usage %d, want 20", r)
	}
	var warn, debug int
	for _, line := range strings.Split(e.log(), "\n") {
		if !strings.Contains(line, "Phantom token over its quota") {
			continue
		}
		switch {
		case strings.Contains(line, "WARN"):
			warn++
		case strings.Contains(line, "DEBUG"):
			debug++
		default:
			t.Errorf("refusal line of another level: %s", line)
		}
	}
	// One WARNING per token, the rest at DEBUG (the test runs at DEBUG).
	if warn != 1 || debug != 179 {
		t.Errorf("refusal lines: %d WARNING, %d DEBUG; want 1 and 179", warn, debug)
	}
}
