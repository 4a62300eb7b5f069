// Package proxy is the credential proxy's request path
// (docs/credential-proxy.md, Design): phantom token in, real credential out, the
// upstream response streamed back unchanged. It is an
// httputil.ReverseProxy whose Rewrite swaps credentials and whose transport
// enforces the retry and timeout rules.
package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/credproxy/internal/inject"
	"terok.dev/sandbox/credproxy/internal/metrics"
	"terok.dev/sandbox/credproxy/internal/phantom"
	"terok.dev/sandbox/credproxy/internal/routes"
	"terok.dev/sandbox/credproxy/internal/usage"
)

// Defaults (docs/credential-proxy.md, Design).
const (
	DefaultMaxBody         = 128 << 20
	DefaultConnectTimeout  = 10 * time.Second
	DefaultReadTimeout     = 60 * time.Second
	DefaultIdleConnTimeout = 30 * time.Second
	// smallBody is the largest known-length response written in one go
	// instead of being flushed per read.
	smallBody = 16 << 10
	// copyBuffer is the response streaming buffer.
	copyBuffer = 128 << 10
	// HealthPath answers without authentication (docs/credential-proxy.md, Design).
	HealthPath = "/-/health"
)

// Error response bodies (docs/credential-proxy.md, Design).
const (
	msgMissingAuth   = "Missing authentication"
	msgInvalidToken  = "Invalid token"
	msgNoRoute       = "No route for provider: "
	msgNoCredential  = "Credential not configured for this provider"
	msgMisconfigured = "Credential misconfigured"
	msgTooLarge      = "Request body too large"
	msgDisconnected  = "Upstream disconnected"
	msgFailed        = "Upstream request failed"
	msgInternal      = "Internal error"
	msgMethod        = "Method not allowed"
)

// Store is the part of the credentials database the proxy reads. Every
// request asks it, and its answers must be as fresh as a query (a
// creddb.Resolver is), so a revoked token or a changed credential takes
// effect on the next request.
type Store interface {
	// Resolve returns what tok stands for and its credential (nil when
	// none is stored); creddb.ErrNotFound for an unknown token.
	Resolve(ctx context.Context, tok string) (creddb.TokenInfo, creddb.Credential, error)
	LoadCredential(ctx context.Context, key creddb.CredentialKey) (creddb.Credential, error)
}

// Options configure a Proxy. Zero durations and sizes take the spec defaults.
type Options struct {
	Store  Store
	Routes routes.Table
	Log    *slog.Logger
	// Transport overrides the upstream transport (tests of TLS roots use the
	// default, which verifies against the system roots and SSL_CERT_FILE).
	Transport       *http.Transport
	ConnectTimeout  time.Duration
	ReadTimeout     time.Duration
	IdleConnTimeout time.Duration
	MaxBody         int64
	// DBConcurrency bounds concurrent Store calls (default 1). One
	// query takes ~15 us; measured under 32 concurrent clients, a single
	// reader costs half the CPU per query of two parallel ones (they
	// contend inside SQLite), and WAL readers do not wait for writers.
	// Negative: no bound, for a Store that serialises itself (a
	// creddb.Resolver does).
	DBConcurrency int
	// AllowStaticMarker accepts creddb.StaticMarker for the default
	// credential set's claude credential, as project/task __static__: a
	// compatibility switch (docs/credential-proxy.md, "The static marker").
	// Off, the marker is an unknown token like any other.
	AllowStaticMarker bool
	// Audit receives one record per request (docs/audit.md, Channel
	// proxy); nil writes none.
	Audit Recorder
	// Metrics counts requests, bytes, latency and token lookups
	// (docs/credential-proxy.md, Metrics); nil counts nothing.
	Metrics *metrics.Metrics
	// Refreshed marks OAuth credentials the background refresh renewed
	// (member oauth_refresh of the audit record); may be nil.
	Refreshed *RefreshMarks
	// Usage counts the requests and response bytes of tokens with a
	// quota (docs/credential-proxy.md, Token quotas); nil counts in
	// memory only (quotas are still enforced, nothing is written).
	Usage *usage.Tracker
}

// Proxy is an http.Handler serving the health endpoint and proxying every
// other request.
type Proxy struct {
	store     Store
	routes    routes.Table
	log       *slog.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
	readTO    time.Duration
	maxBody   int64
	dbSem     chan struct{}
	// allowStatic is Options.AllowStaticMarker; staticRefused makes the
	// refusal's operator hint a one-time line, not one per request.
	allowStatic   bool
	staticRefused sync.Once
	audit         Recorder
	metrics       *metrics.Metrics
	refreshed     *RefreshMarks
	usage         *usage.Tracker
	anyMask       bool
	// known maps tokens that resolved to their TokenInfo (at most
	// knownCap): a later unknown answer for one of them is a revocation.
	known  sync.Map
	knownN atomic.Int64
}

// NewTransport builds the upstream transport: system TLS roots (Go honours
// SSL_CERT_FILE and SSL_CERT_DIR), HTTP/2 when the upstream offers it,
// a keep-alive pool whose idle connections retire after idle, no
// environment proxy and no transparent decompression.
func NewTransport(connect, idle time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   connect,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       idle,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// StaticProject is the project and task every use of the static marker is
// logged under.
const StaticProject = "__static__"

// New builds a Proxy.
func New(o Options) *Proxy {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.DBConcurrency == 0 {
		o.DBConcurrency = 1
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		o.Transport = NewTransport(o.ConnectTimeout, o.IdleConnTimeout)
	}
	p := &Proxy{
		store:       o.Store,
		routes:      o.Routes,
		log:         o.Log,
		transport:   o.Transport,
		readTO:      o.ReadTimeout,
		maxBody:     o.MaxBody,
		allowStatic: o.AllowStaticMarker,
		audit:       o.Audit,
		metrics:     o.Metrics,
		refreshed:   o.Refreshed,
		usage:       o.Usage,
	}
	if p.usage == nil {
		p.usage = usage.New(nil, o.Log)
	}
	for _, rt := range o.Routes {
		if !rt.Mask.Empty() {
			p.anyMask = true
		}
	}
	if o.DBConcurrency > 0 {
		p.dbSem = make(chan struct{}, o.DBConcurrency)
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   p.rewrite,
		Transport: roundTripper{p},
		// Streamed responses (unknown or large length, SSE) are flushed after
		// every read (see modifyResponse); a small response with a known
		// length goes out in one write.
		FlushInterval:  0,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       log.New(slogWriter{o.Log}, "", 0),
		BufferPool:     newBufferPool(),
	}
	return p
}

// Close drops the idle upstream connections.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

// reqState is what one request carries from ServeHTTP into the reverse
// proxy's hooks. It holds the real secret; it lives for one request only.
// It is also the exchange's context (the request context plus a cancel),
// answering stateKey with itself, so one allocation carries the state, the
// watchdog and the trace hooks.
type reqState struct {
	context.Context
	route      routes.Route
	inj        inject.Injection
	replayable bool
	buffered   []byte       // replayable body, nil when streamed or empty
	limit      *limitReader // streamed body, nil otherwise
	watchdog   watchdog     // read inactivity timer
	trace      httptrace.ClientTrace
	attempts   atomic.Int32 // upstream connections taken
	exhausted  atomic.Bool  // the retry budget stopped an attempt
	cancel     func()       // cancels the upstream exchange
	start      time.Time
	token      string         // phantom token, for log-safe display only
	ev         *exchange      // the audit record in the making, nil with audit off
	quota      *usage.Counter // the token's usage, nil without a quota
}

// sent is the request body bytes forwarded upstream.
func (st *reqState) sent() int64 {
	switch {
	case st.buffered != nil:
		return int64(len(st.buffered))
	case st.limit != nil:
		return st.limit.n.Load()
	}
	return 0
}

type stateKey struct{}

// Value implements context.Context.
func (st *reqState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return st
	}
	return st.Context.Value(key)
}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// gotConn enforces the retry budget: at most one retry, and only for a
// replayable request. Cancelling alone is not enough: the transport may
// already be writing the request on the connection it just took, so the
// connection is closed too - nothing of an attempt over budget reaches the
// upstream (GotConn runs before the request is written).
func (st *reqState) gotConn(info httptrace.GotConnInfo) {
	n := st.attempts.Add(1)
	if n > 2 || (n > 1 && !st.replayable) {
		st.exhausted.Store(true)
		st.cancel()
		if info.Conn != nil {
			_ = info.Conn.Close()
		}
	}
}

func (st *reqState) wroteRequest(httptrace.WroteRequestInfo) { st.watchdog.kick() }

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == HealthPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `{"status": "ok"}`)
		}
		return
	}
	var ev *exchange
	var st *reqState
	if p.metrics != nil {
		p.metrics.InFlight(1)
		defer p.metrics.InFlight(-1)
	}
	if p.audit != nil || p.metrics != nil {
		cw := &countingWriter{ResponseWriter: w}
		w = cw
		ev = &exchange{start: time.Now(), method: r.Method, escaped: r.URL.EscapedPath(), remote: r.RemoteAddr, cw: cw}
		defer p.finish(ev, r, &st)
	}
	tok, ok := phantom.Extract(r.Header)
	if !ok {
		ev.refuse(ReasonMissingToken)
		plain(w, http.StatusUnauthorized, msgMissingAuth)
		return
	}
	if ev != nil {
		ev.token = tok
	}
	info, cred, credErr, err := p.resolve(r.Context(), tok)
	if err != nil {
		if errors.Is(err, creddb.ErrTaskGone) {
			// Also before ErrNotFound: the token's container has ended
			// (docs/security-model.md, Tokens that die with their task).
			p.metrics.Lookup("task-gone")
			ev.refuse(ReasonTaskGone)
			var tg *creddb.TaskGoneError
			if ev != nil && errors.As(err, &tg) {
				ev.taskEnd = tg.End
			}
			was, _ := p.revoked(tok)
			if ev != nil {
				ev.info = was
			}
			p.log.Debug("Rejected phantom token of an ended container", "token_prefix", tokenid.Show(tok),
				"project", was.Project, "task", was.Task, "path", r.URL.Path)
			plain(w, http.StatusUnauthorized, msgInvalidToken)
			return
		}
		if errors.Is(err, creddb.ErrExpired) {
			// Before ErrNotFound: ErrExpired is one. What the token stood
			// for is known if it resolved while it was live
			// (docs/credential-proxy.md, Audit records).
			p.metrics.Lookup("expired")
			ev.refuse(ReasonExpired)
			was, _ := p.revoked(tok)
			if ev != nil {
				ev.info = was
			}
			p.log.Debug("Rejected expired phantom token", "token_prefix", tokenid.Show(tok),
				"project", was.Project, "task", was.Task, "path", r.URL.Path)
			plain(w, http.StatusUnauthorized, msgInvalidToken)
			return
		}
		if errors.Is(err, creddb.ErrNotFound) {
			if was, ok := p.revoked(tok); ok {
				p.metrics.Lookup("revoked")
				ev.refuse(ReasonRevoked)
				if ev != nil {
					ev.info = was
				}
				p.log.Debug("Rejected revoked phantom token", "token_prefix", tokenid.Show(tok),
					"project", was.Project, "task", was.Task, "path", r.URL.Path)
			} else {
				p.metrics.Lookup("unknown")
				ev.refuse(ReasonUnknownToken)
				p.log.Debug("Rejected unknown phantom token", "token_prefix", tokenid.Show(tok), "path", r.URL.Path)
			}
			plain(w, http.StatusUnauthorized, msgInvalidToken)
			return
		}
		p.metrics.Lookup("error")
		ev.fail(ReasonInternal)
		p.internal(w, r, "look up phantom token", err)
		return
	}
	p.metrics.Lookup("found")
	if info.Project != StaticProject {
		p.remember(tok, info)
	}
	if ev != nil {
		ev.info = info
	}
	route, ok := p.routes[info.Provider]
	if !ok {
		ev.refuse(ReasonNoRoute)
		p.log.Warn("No route for provider; add it to the routes file and restart the proxy",
			"provider", info.Provider, "project", info.Project, "task", info.Task)
		plain(w, http.StatusNotFound, msgNoRoute+info.Provider)
		return
	}
	if ev != nil {
		ev.route = &route
	}
	if errors.Is(credErr, creddb.ErrBadScope) {
		// Fail closed: the token's narrowing is unknown, so the route's
		// wider scope must not stand in for it.
		ev.refuse(ReasonScope)
		p.log.Error("Phantom token refused: its token_scope row in the credentials database cannot be parsed; "+
			"revoke the task's tokens and create them again",
			"token_prefix", tokenid.Show(tok), "provider", info.Provider, "project", info.Project, "task", info.Task,
			"error", credErr.Error())
		outOfScope(w, info.Provider, r)
		return
	}
	if errors.Is(credErr, creddb.ErrBadQuota) {
		// Fail closed: a token whose limits cannot be read never runs
		// unlimited (docs/credential-proxy.md, Token quotas).
		ev.refuse(ReasonQuota)
		p.log.Error("Phantom token refused: its token_quota row in the credentials database is malformed; "+
			"fix the row or revoke the task's tokens and create them again",
			"token_prefix", tokenid.Show(tok), "provider", info.Provider, "project", info.Project, "task", info.Task,
			"error", credErr.Error())
		overQuota(w, info.Provider, nil)
		return
	}
	if neverForwarded(r.Method) {
		// Whatever the scope says: an upstream that answers
		// TRACE echoes the request, the injected credential included
		// (docs/credential-proxy.md, Methods never forwarded).
		ev.refuse(ReasonMethod)
		p.log.Warn("Request with a method the proxy never forwards refused",
			"provider", info.Provider, "project", info.Project, "task", info.Task,
			"token_prefix", tokenid.Show(tok), "method", r.Method)
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		plain(w, http.StatusMethodNotAllowed, msgMethod)
		return
	}
	if !inScope(r, route.Scope, info.Scope) {
		ev.refuse(ReasonScope)
		p.log.Warn("Request outside the route's or the token's scope refused",
			"provider", info.Provider, "project", info.Project, "task", info.Task,
			"token_prefix", tokenid.Show(tok), "method", r.Method, "path", r.URL.Path)
		outOfScope(w, info.Provider, r)
		return
	}
	if credErr != nil {
		ev.fail(ReasonInternal)
		p.internal(w, r, "load credential "+info.CredentialSet+"/"+info.Provider, credErr)
		return
	}
	if cred == nil {
		ev.fail(ReasonNoCredential)
		p.log.Warn("Credential not configured; store it with `terok-sandbox credentials set`",
			"provider", info.Provider, "credential_set", info.CredentialSet)
		plain(w, http.StatusBadGateway, msgNoCredential)
		return
	}
	inj, err := inject.Select(cred, route)
	if err == nil && !inj.Valid() {
		err = inject.ErrMisconfigured
	}
	if err != nil {
		ev.fail(ReasonMisconfig)
		p.log.Warn("Credential has no usable secret; store it again with `terok-sandbox credentials set`",
			"provider", info.Provider, "credential_set", info.CredentialSet)
		plain(w, http.StatusBadGateway, msgMisconfigured)
		return
	}

	st = &reqState{route: route, inj: inj, replayable: replayable(r), start: time.Now(), token: tok}
	if r.ContentLength > p.maxBody {
		ev.refuse(ReasonTooLarge)
		w.Header().Set("Connection", "close")
		plain(w, http.StatusRequestEntityTooLarge, msgTooLarge)
		return
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if hasBody && st.replayable {
		// A replayable request may be sent twice, so its body is kept.
		b, err := io.ReadAll(io.LimitReader(r.Body, p.maxBody+1))
		if err != nil {
			ev.fail(ReasonBadBody)
			p.log.Debug("Client request body read failed", "provider", route.Provider, "error", err)
			plain(w, http.StatusBadRequest, "Bad request body")
			return
		}
		if int64(len(b)) > p.maxBody {
			ev.refuse(ReasonTooLarge)
			plain(w, http.StatusRequestEntityTooLarge, msgTooLarge)
			return
		}
		st.buffered = b
	} else if hasBody {
		// Never replayed, so streamed: no copy of a large upload in memory.
		st.limit = &limitReader{r: r.Body, left: p.maxBody}
	}
	if info.Quota != nil {
		// Last, right before forwarding: only a forwarded request counts.
		c := p.usage.Counter(tok, info.Quota)
		if ref := c.Admit(); ref != nil {
			ev.refuse(ReasonQuota)
			// WARNING once per token, then DEBUG (every refusal is audited).
			level := slog.LevelDebug
			if c.FirstRefusal() {
				level = slog.LevelWarn
			}
			p.log.Log(r.Context(), level, "Phantom token over its quota; request refused (the quota does not reset: issue a new token or raise the limit)",
				"provider", info.Provider, "project", info.Project, "task", info.Task,
				"token_prefix", tokenid.Show(tok), "quota", string(ref.Kind), "limit", ref.Limit, "used", ref.Used)
			overQuota(w, info.Provider, ref)
			return
		}
		st.quota = c
	}
	if ev != nil {
		ev.reqN = st.sent
		if route.Refresh != nil {
			ev.refresh = p.refreshed.Take(info.CredentialSet, info.Provider)
		}
		st.ev = ev
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	st.Context, st.cancel = ctx, cancel
	st.watchdog.start(p.readTO, cancel)
	defer st.watchdog.stop()
	st.trace = httptrace.ClientTrace{
		GotConn:              st.gotConn,
		WroteRequest:         st.wroteRequest,
		GotFirstResponseByte: st.watchdog.kick,
	}
	ctx = httptrace.WithClientTrace(st, &st.trace)
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// methodOverrides and pathOverrides are request headers that upstreams
// act on instead of the request line's method (Rack's
// MethodOverride, Google's front ends, ...) or path (IIS, older Symfony):
// a scope must hold for them too (docs/credential-proxy.md, Scopes).
var (
	methodOverrides = [...]string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}
	pathOverrides   = [...]string{"X-Original-Url", "X-Rewrite-Url"}
)

// inScope reports whether every method and path an upstream may read from
// r — the request line's, and those of the override headers — is inside
// every one of scopes. A path override that is not an origin-form path
// ("/...", its query ignored) is never in a non-empty scope.
func inScope(r *http.Request, scopes ...scope.Scope) bool {
	methods := []string{r.Method}
	paths := []string{r.URL.EscapedPath()}
	for _, h := range methodOverrides {
		for _, v := range r.Header.Values(h) {
			methods = append(methods, strings.TrimSpace(v))
		}
	}
	pathOK := true
	for _, h := range pathOverrides {
		for _, v := range r.Header.Values(h) {
			v, _, _ = strings.Cut(strings.TrimSpace(v), "?")
			if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") {
				pathOK = false
			}
			paths = append(paths, v)
		}
	}
	for _, s := range scopes {
		if s.Empty() {
			continue
		}
		if !pathOK {
			return false
		}
		for _, m := range methods {
			for _, p := range paths {
				if !s.Allowed(m, p) {
					return false
				}
			}
		}
	}
	return true
}

// neverForwarded reports whether method is one the proxy refuses whatever
// the scope (docs/credential-proxy.md, Methods never forwarded): TRACE and
// IIS's TRACK make an upstream that supports them send the request back as
// it received it, the real credential the proxy injected included; CONNECT
// asks the upstream for a tunnel, which no route is for. Methods are
// case-sensitive, but upstreams that are not must not be reached by "trace".
func neverForwarded(method string) bool {
	for _, m := range [...]string{http.MethodTrace, "TRACK", http.MethodConnect} {
		if strings.EqualFold(method, m) {
			return true
		}
	}
	return false
}

// resolve answers who a token stands for and loads its credential, fresh
// from the database on every request. err is a token lookup failure
// (creddb.ErrNotFound for an unknown token); credErr a credential row that
// could not be read; cred is nil when no credential is stored.
func (p *Proxy) resolve(ctx context.Context, tok string) (info creddb.TokenInfo, cred creddb.Credential, credErr, err error) {
	if err := p.acquire(ctx); err != nil {
		return info, nil, nil, err
	}
	defer p.release()
	// A cancellable context makes the SQLite driver start a watcher
	// goroutine per query (to interrupt it); a primary-key lookup is over
	// long before a cancellation could matter, so the queries run without.
	ctx = context.WithoutCancel(ctx)
	info, cred, err = p.store.Resolve(ctx, tok)
	if errors.Is(err, creddb.ErrNotFound) && tok == creddb.StaticMarker {
		if !p.allowStatic {
			p.staticRefused.Do(func() {
				p.log.Warn("Refused the static phantom marker (answered like an unknown token); containers must use their own phantom token. "+
					"Only for old containers: set proxy_static_marker = true in config.toml and restart the proxy",
					"token_prefix", tokenid.Show(tok))
			})
			return info, nil, nil, err
		}
		info = creddb.TokenInfo{Project: StaticProject, Task: StaticProject,
			CredentialSet: creddb.DefaultSet, Provider: "claude"}
		// Every use, so an operator can see who still relies on it.
		p.log.Warn("Static phantom marker used: injecting the default credential (compatibility switch --allow-static-marker)",
			"project", info.Project, "task", info.Task, "token_prefix", tokenid.Show(tok),
			"credential_set", info.CredentialSet, "provider", info.Provider)
		cred, err = p.store.LoadCredential(ctx, creddb.CredentialKey{Set: info.CredentialSet, Provider: info.Provider})
		if errors.Is(err, creddb.ErrNotFound) {
			return info, nil, nil, nil
		}
		return info, cred, err, nil
	}
	if err != nil && info.Provider != "" {
		// The token is known; its credential row is unreadable.
		return info, nil, err, nil
	}
	return info, cred, nil, err
}

func (p *Proxy) acquire(ctx context.Context) error {
	if p.dbSem == nil {
		return nil
	}
	select {
	case p.dbSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Proxy) release() {
	if p.dbSem != nil {
		<-p.dbSem
	}
}

func (p *Proxy) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if r.Context().Err() != nil {
		return // client went away while we waited
	}
	p.log.Error("Internal error: "+what+" failed; check the credentials database",
		"error", err.Error())
	plain(w, http.StatusInternalServerError, msgInternal)
}

// replayable: GET, HEAD, OPTIONS, or an Idempotency-Key header (docs/credential-proxy.md, Design).
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	for k := range r.Header {
		if strings.EqualFold(k, "Idempotency-Key") {
			return true
		}
	}
	return false
}

// rewrite builds the upstream request (docs/credential-proxy.md, Design).
func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	in, out := pr.In, pr.Out
	out.URL = &url.URL{
		Scheme:   st.route.Scheme,
		Host:     st.route.Host,
		Path:     in.URL.Path,
		RawPath:  in.URL.RawPath,
		RawQuery: in.URL.RawQuery,
	}
	if i := strings.IndexByte(in.RequestURI, '?'); strings.HasPrefix(in.RequestURI, "/") {
		// Forward the path exactly as received, still percent-encoded.
		raw := in.RequestURI
		if i >= 0 {
			raw = raw[:i]
		}
		out.URL.RawPath = raw
	}
	out.Host = ""
	// The reverse proxy drops these when Rewrite is used; the spec forwards
	// every end-to-end request header.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if vs, ok := in.Header[k]; ok {
			out.Header[k] = append([]string(nil), vs...)
		}
	}
	stripHeaders(out.Header)
	st.inj.Apply(out.Header)
	switch {
	case st.buffered != nil:
		b := st.buffered
		out.Body = io.NopCloser(bytes.NewReader(b))
		out.ContentLength = int64(len(b))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	case st.limit != nil:
		st.limit.kick = st.watchdog.kick
		out.Body = st.limit
		out.GetBody = nil
	default:
		out.Body = nil
		out.ContentLength = 0
	}
}

// modifyResponse applies the response rules (docs/credential-proxy.md, Design)
// to the upstream response headers and arms the
// read inactivity timeout on its body.
func (p *Proxy) modifyResponse(res *http.Response) error {
	st := stateOf(res.Request.Context())
	st.watchdog.kick()
	if st.quota != nil && st.quota.OverBytes() != nil {
		// Another stream of the token used up its byte quota while this
		// request was on its way: nothing of it reached the client yet,
		// so it is refused like the next request (errorHandler).
		return errQuotaCut
	}
	res.Header.Del("Content-Length")
	if res.ContentLength < 0 || res.ContentLength > smallBody {
		// Makes the reverse proxy flush after every read: SSE, chunked and
		// large bodies reach the client as they arrive.
		res.ContentLength = -1
	}
	if locs := res.Header.Values("Location"); len(locs) > 0 {
		res.Header.Del("Location")
		if loc, ok := rewriteLocation(locs[0], st.route); ok {
			res.Header.Set("Location", loc)
		}
	}
	switch {
	case res.StatusCode != http.StatusSwitchingProtocols && res.Body != nil:
		res.Body = &watchedBody{ReadCloser: res.Body, w: &st.watchdog, q: st.quota, cut: p.quotaCut(st)}
	case st.quota != nil:
		// An upgraded connection's upstream-to-client bytes count too.
		if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
			// Its copy goroutines may outlive the record: the cut only
			// logs.
			provider, tok := st.route.Provider, st.token
			res.Body = countedConn{rwc, st.quota, func() {
				p.log.Warn("Upgraded connection closed: the phantom token reached its response byte quota",
					"provider", provider, "token_prefix", tokenid.Show(tok))
			}}
		}
	}
	return nil
}

// rewriteLocation keeps relative references, turns absolute ones on the
// upstream's own origin into path and query, and drops every other one so
// a redirect never points a client at a host it did not ask for.
func rewriteLocation(loc string, r routes.Route) (string, bool) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", false
	}
	if !u.IsAbs() && u.Host == "" {
		return loc, true
	}
	if strings.EqualFold(u.Scheme, r.Scheme) && strings.EqualFold(u.Host, r.Host) {
		ref := &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery, Fragment: u.Fragment}
		s := ref.String()
		if s == "" || s[0] != '/' {
			s = "/" + s
		}
		return s, true
	}
	return "", false
}

// errorHandler answers an exchange that failed before the response started.
func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r.Context())
	if st == nil {
		plain(w, http.StatusBadGateway, msgFailed)
		return
	}
	cause := describe(err)
	switch {
	case errors.Is(err, errQuotaCut):
		st.ev.refuse(ReasonQuota)
		ref := st.quota.OverBytes()
		p.log.Warn("Phantom token over its quota; response refused (the quota does not reset: issue a new token or raise the limit)",
			"provider", st.route.Provider, "token_prefix", tokenid.Show(st.token), "quota", string(usage.ResponseBytes))
		if ref == nil {
			ref = &usage.Refusal{Kind: usage.ResponseBytes}
		}
		overQuota(w, st.route.Provider, ref)
	case st.limit != nil && st.limit.over.Load():
		st.ev.refuse(ReasonTooLarge)
		p.log.Warn("Request body over the limit; the client must send a smaller body",
			"provider", st.route.Provider, "limit_bytes", p.maxBody)
		plain(w, http.StatusRequestEntityTooLarge, msgTooLarge)
	case st.watchdog.fired.Load():
		st.ev.fail(ReasonTimeout)
		p.log.Warn("Upstream request timed out; check the provider's status or the network",
			"provider", st.route.Provider, "timeout", p.readTO.String())
		plain(w, http.StatusBadGateway, msgFailed)
	case st.exhausted.Load() || disconnected(err):
		st.ev.fail(ReasonDisconnected)
		p.log.Warn("Upstream disconnected before responding; the client may retry",
			"provider", st.route.Provider, "attempts", st.attempts.Load(), "error", cause)
		plain(w, http.StatusBadGateway, msgDisconnected)
	case errors.Is(r.Context().Err(), context.Canceled):
		// The client went away; nobody is left to answer, and an empty
		// success must not be written: abort the connection.
		st.ev.fail(ReasonClientGone)
		p.log.Debug("Client went away before the upstream answered", "provider", st.route.Provider)
		panic(http.ErrAbortHandler)
	default:
		st.ev.fail(ReasonUpstream)
		p.log.Warn("Upstream request failed; check the route's upstream and the network",
			"provider", st.route.Provider, "error", cause)
		plain(w, http.StatusBadGateway, msgFailed)
	}
}

// describe renders an upstream error without the request URL (a client
// may have put anything in the query).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// disconnected: the upstream closed the connection before any response
// header arrived.
func disconnected(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "server closed") || strings.Contains(s, "connection reset") ||
		strings.Contains(s, "broken pipe")
}

// outOfScope answers 403 with a JSON body naming the error type, route,
// method and path (never the credential); the request is not forwarded.
func outOfScope(w http.ResponseWriter, provider string, r *http.Request) {
	body, _ := json.Marshal(map[string]string{
		"error": "scope", "route": provider, "method": r.Method, "path": r.URL.Path,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(append(body, '\n'))
}

// quotaBody is the 429 answer's JSON (docs/credential-proxy.md, Token quotas).
type quotaBody struct {
	Error string `json:"error"`
	Route string `json:"route"`
	Quota string `json:"quota"`
	Limit *int64 `json:"limit,omitempty"`
	Used  *int64 `json:"used,omitempty"`
}

// overQuota answers 429 without Retry-After (a quota does not reset by
// itself); ref nil: the token's quota row is malformed. The request is not
// forwarded.
func overQuota(w http.ResponseWriter, provider string, ref *usage.Refusal) {
	b := quotaBody{Error: "quota", Route: provider, Quota: "malformed"}
	if ref != nil {
		b.Quota, b.Limit, b.Used = string(ref.Kind), &ref.Limit, &ref.Used
	}
	body, _ := json.Marshal(b)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusTooManyRequests)
	_, _ = w.Write(append(body, '\n'))
}

// plain writes one of the error bodies (docs/credential-proxy.md, Design).
func plain(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", fmt.Sprint(len(msg)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}

// stripHeaders removes, under any spelling, every phantom credential
// header, Host and Content-Length (recomputed by the transport) in one pass.
func stripHeaders(h http.Header) {
	ph := phantom.Headers()
	for k := range h {
		if strings.EqualFold(k, ph[0]) || strings.EqualFold(k, ph[1]) || strings.EqualFold(k, ph[2]) ||
			strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") {
			delete(h, k)
		}
	}
}

// limitReader streams a request body and fails once it exceeds the cap.
type limitReader struct {
	r    io.ReadCloser
	left int64
	n    atomic.Int64 // bytes passed on, read by the audit record
	over atomic.Bool
	kick func()
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.left < 0 {
		return 0, errors.New("request body too large")
	}
	if int64(len(b)) > l.left+1 {
		b = b[:l.left+1]
	}
	n, err := l.r.Read(b)
	l.left -= int64(n)
	if l.left < 0 {
		l.over.Store(true)
		return 0, errors.New("request body too large")
	}
	l.n.Add(int64(n))
	if n > 0 && l.kick != nil {
		l.kick()
	}
	return n, err
}

func (l *limitReader) Close() error { return l.r.Close() }

// watchdog cancels the exchange after d without progress. A kick only
// records the time (progress comes with every read of a streamed body);
// the timer, when it expires, re-arms itself for the rest of the period
// if there was progress meanwhile.
type watchdog struct {
	d       time.Duration
	base    time.Time    // monotonic origin of last
	last    atomic.Int64 // time of the last progress, since base
	t       *time.Timer
	cancel  func()
	fired   atomic.Bool
	stopped atomic.Bool
}

func (w *watchdog) start(d time.Duration, cancel func()) {
	w.d, w.cancel, w.base = d, cancel, time.Now()
	w.t = time.AfterFunc(d, w.expire)
}

func (w *watchdog) expire() {
	if w.stopped.Load() {
		return
	}
	if idle := time.Since(w.base) - time.Duration(w.last.Load()); idle < w.d {
		w.t.Reset(w.d - idle)
		return
	}
	w.fired.Store(true)
	w.cancel()
}

func (w *watchdog) kick() {
	if !w.fired.Load() {
		w.last.Store(int64(time.Since(w.base)))
	}
}

// stop ends the watchdog; an expire already running may re-arm the timer
// once, and that run returns at once.
func (w *watchdog) stop() {
	w.stopped.Store(true)
	w.t.Stop()
}

// errQuotaCut ends a response stream of a token past its byte limit.
var errQuotaCut = errors.New("token over its response byte quota")

// quotaCut is what a cut stream does first: the request's record gets
// reason quota and a warning is logged (the reverse proxy then aborts the
// response, which the client sees as a truncated body).
func (p *Proxy) quotaCut(st *reqState) func() {
	return func() {
		st.ev.refuse(ReasonQuota)
		p.log.Warn("Response cut: the phantom token reached its response byte quota during another stream",
			"provider", st.route.Provider, "token_prefix", tokenid.Show(st.token))
	}
}

// watchedBody restarts the inactivity timer on every read that brings
// data, and counts the bytes against the token's quota (q, may be nil).
// The stream whose bytes cross the byte limit completes (docs/credential-
// proxy.md, Token quotas); every other stream of the token still running
// then is cut at its next read, so parallel streams cannot each run past
// the limit.
type watchedBody struct {
	io.ReadCloser
	w        *watchdog
	q        *usage.Counter
	cut      func()
	crossing bool // this stream crossed the byte limit
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.q != nil && !b.crossing && b.q.OverBytes() != nil {
		b.cut()
		return 0, errQuotaCut
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.kick()
		if b.q != nil && b.q.AddBytes(int64(n)) {
			b.crossing = true
		}
	}
	return n, err
}

// countedConn counts what an upgraded upstream connection sends, and
// ends it once the token's byte limit is reached: a connection has no
// end of its own to complete at.
type countedConn struct {
	io.ReadWriteCloser
	q   *usage.Counter
	cut func()
}

func (c countedConn) Read(p []byte) (int, error) {
	if c.q.OverBytes() != nil {
		c.cut()
		return 0, errQuotaCut
	}
	n, err := c.ReadWriteCloser.Read(p)
	c.q.AddBytes(int64(n))
	return n, err
}

// roundTripper sends through the proxy's transport.
type roundTripper struct{ p *Proxy }

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	return rt.p.transport.RoundTrip(r)
}

// bufferPool recycles the copy buffers of response streaming.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, copyBuffer); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// slogWriter routes the standard library's log lines (reverse proxy copy
// errors) into the structured log.
type slogWriter struct{ l *slog.Logger }

func (s slogWriter) Write(b []byte) (int, error) {
	s.l.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}
