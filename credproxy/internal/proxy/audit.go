package proxy

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/mask"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// Recorder receives one audit record per request (docs/audit.md, Channel
// proxy). Put must not keep the request waiting longer than it has to (an
// auditq.Queue hands the record to a writer goroutine).
type Recorder interface{ Put(Entry) }

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
	ReasonExpired      = "expired"
	ReasonTaskGone     = "task-gone"
	ReasonNoRoute      = "no-route"
	ReasonScope        = "scope"
	ReasonMethod       = "method"
	ReasonQuota        = "quota"
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
	taskEnd string // a task-gone token's end (creddb.TaskGoneError)
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
	if p.metrics != nil {
		var req int64
		if ev.reqN != nil {
			req = ev.reqN()
		}
		p.metrics.Request(ev.outcome, ev.reason, req, ev.cw.n, time.Since(ev.start))
	}
	if p.audit != nil {
		p.audit.Put(ev.entry(p.pathOf(ev)))
	}
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

func (ev *exchange) entry(path string) Entry {
	e := Entry{
		Time: ev.start, Event: "request", Outcome: ev.outcome, Reason: ev.reason,
		Project: ev.info.Project, Task: ev.info.Task,
		Provider: ev.info.Provider, CredentialSet: ev.info.CredentialSet,
		Method: ev.method, Path: &path, Remote: ev.remote, TaskEnd: ev.taskEnd,
	}
	status, resp := ev.cw.status, ev.cw.n
	e.Status, e.RespBytes = &status, &resp
	var req int64
	if ev.reqN != nil {
		req = ev.reqN()
	}
	e.ReqBytes = &req
	ms := math.Round(float64(time.Since(ev.start).Microseconds())) / 1000
	e.DurationMS = &ms
	if e.Remote == "@" {
		e.Remote = ""
	}
	if ev.token != "" {
		e.TokenPrefix = audit.TokenPrefix(ev.token)
	}
	if ev.route != nil {
		e.Host = ev.route.Host
		refresh := ev.refresh
		e.OAuthRefresh = &refresh
	}
	return e
}

// Entry is one audit record of channel proxy (docs/audit.md, Channel
// proxy): the common members and the proxy's, flat, encoded without the
// generic audit.Record's maps (it is made for every request).
type Entry struct {
	V             int       `json:"v"`
	Time          time.Time `json:"time"`
	Channel       string    `json:"channel"`
	Event         string    `json:"event"`
	Outcome       string    `json:"outcome"`
	Reason        string    `json:"reason,omitempty"`
	Project       string    `json:"project,omitempty"`
	Task          string    `json:"task,omitempty"`
	TokenPrefix   string    `json:"token_prefix,omitempty"`
	Provider      string    `json:"provider,omitempty"`
	CredentialSet string    `json:"credential_set,omitempty"`
	Method        string    `json:"method,omitempty"`
	Host          string    `json:"host,omitempty"`
	Path          *string   `json:"path,omitempty"`
	Status        *int      `json:"status,omitempty"`
	ReqBytes      *int64    `json:"req_bytes,omitempty"`
	RespBytes     *int64    `json:"resp_bytes,omitempty"`
	DurationMS    *float64  `json:"duration_ms,omitempty"`
	OAuthRefresh  *bool     `json:"oauth_refresh,omitempty"`
	Remote        string    `json:"remote,omitempty"`
	// TaskEnd is how the task of a task-gone token ended (taskend reasons).
	TaskEnd string `json:"task_end,omitempty"`
}

// EncodeEntry appends e as one JSON line; it fills v, channel and a zero
// time. It is the auditq.Encode of the proxy's queue. It writes what
// encoding/json would for Entry (FuzzEncodeEntry checks that) by hand:
// reflection was half of the writer's cost per record.
func EncodeEntry(b []byte, e *Entry) ([]byte, error) {
	e.V, e.Channel = audit.Version, "proxy"
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendMember(b, "channel", e.Channel, true)
	b = appendMember(b, "event", e.Event, true)
	b = appendMember(b, "outcome", e.Outcome, true)
	b = appendMember(b, "reason", e.Reason, false)
	b = appendMember(b, "project", e.Project, false)
	b = appendMember(b, "task", e.Task, false)
	b = appendMember(b, "token_prefix", e.TokenPrefix, false)
	b = appendMember(b, "provider", e.Provider, false)
	b = appendMember(b, "credential_set", e.CredentialSet, false)
	b = appendMember(b, "method", e.Method, false)
	b = appendMember(b, "host", e.Host, false)
	if e.Path != nil {
		b = appendMember(b, "path", *e.Path, true)
	}
	if e.Status != nil {
		b = strconv.AppendInt(append(b, `,"status":`...), int64(*e.Status), 10)
	}
	if e.ReqBytes != nil {
		b = strconv.AppendInt(append(b, `,"req_bytes":`...), *e.ReqBytes, 10)
	}
	if e.RespBytes != nil {
		b = strconv.AppendInt(append(b, `,"resp_bytes":`...), *e.RespBytes, 10)
	}
	if e.DurationMS != nil {
		f := *e.DurationMS
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b, fmt.Errorf("audit record: duration_ms %v is not a number", f)
		}
		b = append(b, `,"duration_ms":`...)
		if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
			j, _ := json.Marshal(f) // exponent form, as encoding/json writes it
			b = append(b, j...)
		} else {
			b = strconv.AppendFloat(b, f, 'f', -1, 64)
		}
	}
	if e.OAuthRefresh != nil {
		b = strconv.AppendBool(append(b, `,"oauth_refresh":`...), *e.OAuthRefresh)
	}
	b = appendMember(b, "remote", e.Remote, false)
	b = appendMember(b, "task_end", e.TaskEnd, false)
	return append(b, '}', '\n'), nil
}

// appendMember appends ,"name":"value" (omitted for an empty value unless
// always).
func appendMember(b []byte, name, v string, always bool) []byte {
	if v == "" && !always {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

// appendString appends s as a JSON string the way encoding/json does:
// quote, backslash and control characters escaped, <, >, & and U+2028/9
// as \u escapes, invalid UTF-8 as U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
