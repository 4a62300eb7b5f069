package proxy

import (
	"math"
	"net/http"
	"sync"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/mask"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// Recorder receives one audit record per request (docs/audit.md, Channel
// proxy). Put must not keep the request waiting longer than it has to (an
// auditq.Queue hands the record to a writer goroutine).
type Recorder interface{ Put(audit.Record) }

// Audit outcomes (docs/audit.md, Common members).
const (
	outcomeOK      = "ok"
	outcomeRefused = "refused"
	outcomeError   = "error"
)

// Audit reasons of the proxy channel (docs/audit.md, Channel proxy).
const (
	ReasonMissingToken = "missing-token"
	ReasonUnknownToken = "unknown-token"
	ReasonRevoked      = "revoked"
	ReasonNoRoute      = "no-route"
	ReasonScope        = "scope"
	ReasonTooLarge     = "too-large"
	ReasonBadBody      = "bad-body"
	ReasonNoCredential = "no-credential"
	ReasonMisconfig    = "misconfigured"
	ReasonInternal     = "internal"
	ReasonTimeout      = "upstream-timeout"
	ReasonDisconnected = "upstream-disconnected"
	ReasonUpstream     = "upstream-failed"
	ReasonClientGone   = "client-gone"
)

// knownCap bounds the tokens remembered to tell a revoked token from one
// that never existed (a token is deleted when revoked).
const knownCap = 1 << 16

// RefreshMarks tells a request that the OAuth credential it injects was
// renewed by the background refresh since the last request that used it:
// the refresher marks, the first request after takes the mark.
type RefreshMarks struct {
	mu sync.Mutex
	m  map[[2]string]bool
}

// Mark records a successful refresh of set/provider.
func (r *RefreshMarks) Mark(set, provider string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[[2]string]bool{}
	}
	r.m[[2]string{set, provider}] = true
}

// Take reports (once) whether set/provider was refreshed since the last Take.
func (r *RefreshMarks) Take(set, provider string) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := [2]string{set, provider}
	if r.m[k] {
		delete(r.m, k)
		return true
	}
	return false
}

// exchange is what one request's audit record is made of. Its methods
// accept a nil receiver: audit off costs nothing more.
type exchange struct {
	start   time.Time
	method  string
	escaped string
	remote  string
	token   string
	info    creddb.TokenInfo
	route   *routes.Route
	outcome string
	reason  string
	refresh bool
	reqN    func() int64
	cw      *countingWriter
}

func (ev *exchange) refuse(reason string) { ev.set(outcomeRefused, reason) }
func (ev *exchange) fail(reason string)   { ev.set(outcomeError, reason) }

func (ev *exchange) set(outcome, reason string) {
	if ev != nil && ev.reason == "" {
		ev.outcome, ev.reason = outcome, reason
	}
}

// finish writes the request's record. It is deferred directly by
// ServeHTTP, so it sees an abort (http.ErrAbortHandler: the client went
// away or the upstream broke off a streamed body), records it, and
// re-panics.
func (p *Proxy) finish(ev *exchange, r *http.Request, st **reqState) {
	rec := recover()
	if rec != nil && ev.reason == "" {
		switch {
		case r.Context().Err() != nil:
			ev.fail(ReasonClientGone)
		case *st != nil && (*st).watchdog.fired.Load():
			ev.fail(ReasonTimeout)
		default:
			ev.fail(ReasonUpstream)
		}
	}
	if ev.outcome == "" {
		ev.outcome = outcomeOK
	}
	p.audit.Put(ev.record(p.pathOf(ev)))
	if rec != nil {
		panic(rec)
	}
}

// pathOf is the recorded path: masked by the route's patterns; before a
// route is known, hidden whole when any route masks paths.
func (p *Proxy) pathOf(ev *exchange) string {
	if ev.route != nil {
		return ev.route.Mask.Path(ev.escaped)
	}
	if rt, ok := p.routes[ev.info.Provider]; ok { // a revoked token's route
		return rt.Mask.Path(ev.escaped)
	}
	if p.anyMask {
		return mask.Placeholder
	}
	return ev.escaped
}

func (ev *exchange) record(path string) audit.Record {
	f := map[string]any{
		"method":      ev.method,
		"path":        path,
		"status":      ev.cw.status,
		"req_bytes":   int64(0),
		"resp_bytes":  ev.cw.n,
		"duration_ms": math.Round(float64(time.Since(ev.start).Microseconds())) / 1000,
	}
	if ev.reqN != nil {
		f["req_bytes"] = ev.reqN()
	}
	if ev.remote != "" && ev.remote != "@" {
		f["remote"] = ev.remote
	}
	if ev.info.Provider != "" {
		f["provider"] = ev.info.Provider
		f["credential_set"] = ev.info.CredentialSet
	}
	if ev.route != nil {
		f["host"] = ev.route.Host
		f["oauth_refresh"] = ev.refresh
	}
	rec := audit.Record{
		Time: ev.start, Channel: "proxy", Event: "request", Outcome: ev.outcome, Reason: ev.reason,
		Project: ev.info.Project, Task: ev.info.Task, Fields: f,
	}
	if ev.token != "" {
		rec.TokenPrefix = audit.TokenPrefix(ev.token)
	}
	return rec
}

// remember keeps a token that resolved, so its later refusal reads
// revoked, with the project and task it stood for.
func (p *Proxy) remember(tok string, info creddb.TokenInfo) {
	if _, ok := p.known.Load(tok); ok || p.knownN.Load() >= knownCap {
		return
	}
	if _, loaded := p.known.LoadOrStore(tok, info); !loaded {
		p.knownN.Add(1)
	}
}

func (p *Proxy) revoked(tok string) (creddb.TokenInfo, bool) {
	v, ok := p.known.Load(tok)
	if !ok {
		return creddb.TokenInfo{}, false
	}
	return v.(creddb.TokenInfo), true
}

// countingWriter counts the status and body bytes sent to the client. It
// unwraps for http.ResponseController (flushes, upgrades).
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
