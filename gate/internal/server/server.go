// Package server is the gate's HTTP handler (docs/gate.md, Request handling; logs: docs/gate.md, Operating it): the
// checks in the specified order (method, route, credentials, token scope),
// limits, and the hand-off to the patched gitkit backend that runs
// `git upload-pack` / `git receive-pack --stateless-rpc` with a clean
// environment and repository hooks disabled.
package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sosedoff/gitkit"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/gate/internal/auth"
	"terok.dev/sandbox/gate/internal/metrics"
	"terok.dev/sandbox/gate/internal/pushcmd"
	"terok.dev/sandbox/gate/internal/route"
	"terok.dev/sandbox/gate/internal/tokens"
)

// ServerHeader identifies the gate (docs/gate.md, Operating it).
const ServerHeader = "terok-gate/1.0"

// Defaults of the limits (docs/gate.md, terok-gate flags).
const (
	DefaultMaxBackends    = 32
	DefaultQueueWait      = 30 * time.Second
	DefaultMaxBody        = 2 << 30 // 2 GiB: a push of a large repository
	DefaultBodyIdle       = 2 * time.Minute
	DefaultRequestTimeout = 2 * time.Hour
	stderrCap             = 16 << 10
	headMax               = 4 << 10
)

// Options configure a Handler. Zero limits take the defaults.
type Options struct {
	BasePath string
	Store    *tokens.Store
	// GitPath is the git executable; "" looks "git" up on PATH (again on
	// every request while it is missing).
	GitPath string
	// Env is the environment the gate passes on to git (PATH, HOME,
	// GIT_EXEC_PATH are taken from it when set); nil means os.Getenv.
	Getenv func(string) string

	MaxBackends    int           // concurrent git processes
	QueueWait      time.Duration // how long a request waits for a slot before 503
	MaxBody        int64         // request body cap (after gzip decoding too) → 413
	BodyIdle       time.Duration // longest pause while reading a request body
	RequestTimeout time.Duration // hard cap on one request (kills its git)
	ExitGrace      time.Duration // wait for git after its output ended (30 s)

	Log       *slog.Logger
	AccessLog bool // log successful requests too (info level)

	// Audit receives one record per git operation and per refusal of a
	// request that presented a token (docs/audit.md, Channel gate); nil
	// writes none.
	Audit *audit.Writer
	// PolicyDir holds the projects' push policies (<dir>/<project>.json,
	// docs/gate.md, Push policy); "" applies the default policy to all.
	PolicyDir string
	// SecretScan receives task pushes into a staging repository and
	// refuses those whose new blobs hold a credential (docs/gate.md,
	// Secret scanning).
	SecretScan bool
	// Metrics counts requests, bytes, latency, git processes and token
	// lookups (docs/gate.md, Metrics); nil counts nothing.
	Metrics *metrics.Metrics
}

// Handler serves the gate. Create it with New.
type Handler struct {
	opt      Options
	realBase string
	baseEnv  []string
	slots    chan struct{}
	gk       *gitkit.Server

	gitMu   sync.Mutex
	gitPath string

	adverts advertCache
}

type ctxKey struct{}

// reqState travels in the request context from ServeHTTP to the gitkit
// PrepareCommand hook.
type reqState struct {
	stderr *capBuffer
	// config is git configuration for this request on top of hookConfig.
	config [][2]string
	// Set by gitkit's RPCDone: whether the RPC ended, and how.
	rpcDone bool
	rpcErr  error
}

// New validates the options and builds the handler.
func New(opt Options) (*Handler, error) {
	if opt.Store == nil {
		return nil, errors.New("gate handler: no token store")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	if opt.MaxBackends <= 0 {
		opt.MaxBackends = DefaultMaxBackends
	}
	if opt.QueueWait <= 0 {
		opt.QueueWait = DefaultQueueWait
	}
	if opt.MaxBody <= 0 {
		opt.MaxBody = DefaultMaxBody
	}
	if opt.BodyIdle <= 0 {
		opt.BodyIdle = DefaultBodyIdle
	}
	if opt.RequestTimeout <= 0 {
		opt.RequestTimeout = DefaultRequestTimeout
	}
	abs, err := filepath.Abs(opt.BasePath)
	if err != nil {
		return nil, fmt.Errorf("gate base path %q: %w", opt.BasePath, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("gate base path %s: %w; create it or fix --base-path", abs, err)
	}
	if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("gate base path %s is not a directory; fix --base-path", real)
	}
	h := &Handler{opt: opt, realBase: real, slots: make(chan struct{}, opt.MaxBackends)}
	h.baseEnv = backendEnv(opt.Getenv, nil)
	h.gitPath = h.resolveGit()
	gitPath := h.gitPath
	if gitPath == "" {
		gitPath = "git"
	}
	h.gk = gitkit.New(gitkit.Config{Dir: real, GitPath: gitPath})
	h.gk.PrepareCommand = h.prepare
	h.gk.ErrorLog = func(where string, err error) {
		if errors.Is(err, context.Canceled) {
			return
		}
		opt.Log.Warn("git backend error", "where", where, "error", err.Error())
	}
	h.gk.ExitGrace = opt.ExitGrace
	h.gk.RPCDone = func(r *gitkit.Request, err error) {
		if st, ok := r.Context().Value(ctxKey{}).(*reqState); ok {
			st.rpcDone, st.rpcErr = true, err
		}
	}
	return h, nil
}

// HookConfig is the git configuration forced on every backend process:
// hooks never run for gate traffic (a task must not get code execution on
// the host through a hook in a mirror), every pushed object is checked by
// git's fsck (a task must not plant objects that attack whoever clones
// the mirror: a .gitmodules URL that is an option, a submodule name that
// climbs, a tree entry .git; docs/gate.md, Request handling), and
// partial clones work.
var hookConfig = [][2]string{
	{"core.hooksPath", "/dev/null"},
	{"receive.fsckObjects", "true"},
	{"uploadpack.allowFilter", "true"},
	{"uploadpack.allowReachableSHA1InWant", "true"},
}

// backendEnv is the backend's clean environment (docs/gate.md, Request
// handling; the CGI-only variables have no meaning for a direct upload-pack/receive-pack run).
func backendEnv(getenv func(string) string, extra [][2]string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "GIT_EXEC_PATH"} {
		if v := getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	all := append(append([][2]string(nil), hookConfig...), extra...)
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(all)))
	for i, kv := range all {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, kv[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, kv[1]))
	}
	return env
}

func (h *Handler) resolveGit() string {
	if h.opt.GitPath != "" {
		if fi, err := os.Stat(h.opt.GitPath); err == nil && !fi.IsDir() {
			return h.opt.GitPath
		}
		return ""
	}
	path := h.opt.Getenv("PATH")
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		cand := filepath.Join(dir, "git")
		if fi, err := os.Stat(cand); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return cand
		}
	}
	return ""
}

// git returns the git executable, looking again while it is missing.
func (h *Handler) git() string {
	h.gitMu.Lock()
	defer h.gitMu.Unlock()
	if h.gitPath == "" {
		h.gitPath = h.resolveGit()
	}
	return h.gitPath
}

func (h *Handler) prepare(cmd *exec.Cmd, r *gitkit.Request) {
	// The git path is resolved against the gate's PATH by us, not by
	// exec's lookup at command creation, so a git installed after start-up
	// is found without a restart.
	cmd.Path, cmd.Err = h.git(), nil
	cmd.Args[0] = "git"
	cmd.Env = append([]string(nil), h.baseEnv...)
	if st, ok := r.Context().Value(ctxKey{}).(*reqState); ok {
		if len(st.config) > 0 {
			cmd.Env = backendEnv(h.opt.Getenv, st.config)
		}
		cmd.Stderr = st.stderr
	} else {
		cmd.Stderr = io.Discard
	}
}

// text writes a short plain-text error answer.
func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, body+"\n")
}

// ServeHTTP implements the checks in the order of docs/gate.md, Request handling.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	rec.Header().Set("Server", ServerHeader)
	who := ""
	o := &op{}
	defer func() {
		h.logRequest(r, rec, who, start)
		h.finish(r, rec, o, start)
	}()

	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		text(rec, http.StatusNotImplemented, "Unsupported method")
		return
	}
	rt, ok := route.Parse(r.RequestURI)
	if !ok {
		text(rec, http.StatusNotFound, "Not Found")
		return
	}
	// Named before authentication, so the metrics count a request without
	// credentials by its kind too (the audit records only token holders).
	o.rt = rt
	o.classify(r)
	user, ok := auth.BasicUser(r.Header.Get("Authorization"))
	if !ok {
		rec.Header()["WWW-Authenticate"] = []string{`Basic realm="terok gate"`} // spec spelling
		rec.Header().Set("Content-Type", "text/plain")
		rec.WriteHeader(http.StatusUnauthorized)
		io.WriteString(rec, "Authentication required\n")
		return
	}
	who = tokenid.Show(user)
	o.token = user
	o.look = h.opt.Store.Lookup(user)
	h.opt.Metrics.Lookup(lookupResult(o.look))
	project := o.look.Project
	if !o.look.OK {
		o.reason = reasonUnknownToken
		if o.look.Revoked {
			o.reason = reasonRevoked
		}
		if o.look.Expired {
			o.reason = reasonExpired
		}
		if o.look.Gone {
			o.reason = reasonTaskGone
		}
		text(rec, http.StatusForbidden, "Forbidden")
		return
	}
	if project != tokens.Wildcard && rt.Repo != project+".git" {
		o.reason = reasonWrongProject
		text(rec, http.StatusForbidden, "Forbidden")
		return
	}
	wantMethod := http.MethodPost
	if rt.Path == route.InfoRefs || rt.Path == route.Head {
		wantMethod = http.MethodGet
	}
	if r.Method != wantMethod {
		rec.Header().Set("Allow", wantMethod)
		text(rec, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	if r.ContentLength > h.opt.MaxBody {
		text(rec, http.StatusRequestEntityTooLarge, "Request body too large")
		return
	}
	repoDir, err := h.confine(rt.Repo)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			h.opt.Log.Warn("refusing repository outside the gate base path", "repo", rt.Repo, "error", err.Error(),
				"next", "replace the symlink with the repository itself")
		}
		text(rec, http.StatusNotFound, "Not Found")
		return
	}
	if h.git() == "" {
		text(rec, http.StatusInternalServerError, "git not found")
		return
	}
	if rt.Path == route.Head {
		h.serveHead(rec, repoDir)
		return
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.opt.RequestTimeout)
	defer cancel()
	if r.Method == http.MethodPost {
		o.in = &countReader{r: r.Body}
		r.Body = o.in
	}
	if h.serveCachedAdvert(ctx, rec, r, rt, repoDir) {
		return
	}
	release, ok := h.acquire(ctx, rec)
	if !ok {
		return
	}
	defer release()

	// Small v2 upload-pack requests are read first: ls-refs and clone-like
	// fetches may be answered from the cache (lsrefs.go, fetchcache.go).
	var capture *fetchCapture
	small, consumed := h.smallV2Body(rec, r, rt)
	if consumed != nil {
		r.Body = io.NopCloser(io.MultiReader(consumed, r.Body))
	}
	if small != nil {
		o.scan.Write(small)
		proto := r.Header.Get("Git-Protocol")
		if h.serveCachedLsRefs(ctx, rec, proto, repoDir, small) {
			return
		}
		var done bool
		if done, capture = h.serveCachedFetch(rec, proto, repoDir, small); done {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(small))
	}
	// Request body and response stream concurrently: git may answer while
	// the last bytes (or the EOF) of the body are still in flight, and net/http
	// would otherwise close the unread body as soon as the response starts.
	if err := http.NewResponseController(rec).EnableFullDuplex(); err != nil {
		h.opt.Log.Debug("full duplex unavailable", "error", err.Error())
	}
	body, err := h.body(rec, r)
	if err != nil {
		text(rec, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	var plan *pushPlan
	if rt.Path == route.ReceivePack {
		// The command list is read (bounded) before git starts; git still
		// gets every byte (docs/gate.md, Push commands).
		push, err := pushcmd.Read(body, pushcmd.Limits{})
		if err != nil {
			h.refuseCommands(rec, err)
			return
		}
		o.push = push
		if plan = h.applyPolicy(rec, body, o, repoDir); plan == nil {
			return
		}
		body = io.NopCloser(io.MultiReader(bytes.NewReader(plan.list), body))
	} else if o.scan != nil && small == nil {
		body = io.NopCloser(io.TeeReader(body, o.scan))
	}
	st := &reqState{stderr: &capBuffer{max: stderrCap}}
	if plan != nil {
		st.config = plan.config
	}
	r2 := r.Clone(context.WithValue(ctx, ctxKey{}, st))
	r2.Body = body
	r2.Header.Del("Content-Encoding") // decoded (and bounded) above
	r2.URL.Path = rt.PathInfo()
	r2.URL.RawPath = ""
	r2.URL.RawQuery = rt.Query
	switch {
	case capture != nil:
		h.gk.ServeHTTP(&captureWriter{ResponseWriter: rec, c: capture}, r2)
		if st.rpcDone && st.rpcErr == nil && rec.status == http.StatusOK {
			h.storeFetch(capture)
		}
	case plan != nil && plan.staged:
		h.stagedPush(ctx, rec, body, o, plan, repoDir, st)
	case o.push != nil:
		o.report = &headCapture{ResponseWriter: rec, max: reportCap}
		h.gk.ServeHTTP(o.report, r2)
	default:
		h.gk.ServeHTTP(rec, r2)
	}
	o.rpcOK = st.rpcDone && st.rpcErr == nil
	if msg := strings.TrimRight(st.stderr.String(), " \t\r\n"); msg != "" {
		h.opt.Log.Warn("git http-backend: "+msg, "repo", rt.Repo)
	}
}

// refuseCommands answers a receive-pack request whose command list could
// not be read: 400 for a malformed list, the body limit's own status (413)
// when it was hit inside the list.
func (h *Handler) refuseCommands(w http.ResponseWriter, err error) {
	var be gitkit.BodyError
	if errors.As(err, &be) {
		text(w, be.HTTPStatus(), err.Error())
		return
	}
	text(w, http.StatusBadRequest, err.Error())
}

// acquire takes one of the git process slots, waiting up to QueueWait; on
// failure it has answered 503 (or the request is gone).
func (h *Handler) acquire(ctx context.Context, w http.ResponseWriter) (release func(), ok bool) {
	t := time.NewTimer(h.opt.QueueWait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		h.opt.Metrics.Git(1)
		return func() { <-h.slots; h.opt.Metrics.Git(-1) }, true
	case <-t.C:
		w.Header().Set("Retry-After", "5")
		text(w, http.StatusServiceUnavailable, "Too many concurrent git operations; retry later")
		return nil, false
	case <-ctx.Done():
		return nil, false
	}
}

// confine returns the repository directory after checking that it resolves
// inside the base path (a symlinked repository may point elsewhere inside
// it, never outside). A missing repository is os.ErrNotExist.
func (h *Handler) confine(repo string) (string, error) {
	p := filepath.Join(h.realBase, repo)
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", os.ErrNotExist
	}
	rel, err := filepath.Rel(h.realBase, real)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s resolves to %s", p, real)
	}
	fi, err := os.Stat(real)
	if err != nil || !fi.IsDir() {
		return "", os.ErrNotExist
	}
	return real, nil
}

func (h *Handler) serveHead(w http.ResponseWriter, repoDir string) {
	// HEAD is a plain file in a repository; never follow a symlink there.
	f, err := os.OpenFile(filepath.Join(repoDir, "HEAD"), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		text(w, http.StatusNotFound, "Not Found")
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, headMax))
	if err != nil {
		text(w, http.StatusNotFound, "Not Found")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-cache, max-age=0, must-revalidate")
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

// body wraps the request body: size cap, idle deadline, gzip decoding with
// the same cap on the decoded size (a small gzip bomb cannot feed git an
// unbounded stream).
func (h *Handler) body(w http.ResponseWriter, r *http.Request) (io.ReadCloser, error) {
	rc := http.NewResponseController(w)
	var rd io.Reader = &idleReader{r: r.Body, rc: rc, idle: h.opt.BodyIdle}
	rd = &capReader{r: rd, left: h.opt.MaxBody, max: h.opt.MaxBody}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		rd = &gzipReader{src: rd}
		rd = &capReader{r: rd, left: h.opt.MaxBody, max: h.opt.MaxBody}
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", enc)
	}
	return io.NopCloser(rd), nil
}

func (h *Handler) logRequest(r *http.Request, rec *recorder, who string, start time.Time) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	attrs := []any{"request", r.Method + " " + r.RequestURI + " " + r.Proto, "status", status,
		"bytes", rec.bytes, "duration_ms", time.Since(start).Milliseconds(), "remote", r.RemoteAddr}
	if who != "" {
		attrs = append(attrs, "token", who)
	}
	switch {
	case status >= 400:
		h.opt.Log.Warn("request refused", attrs...)
	case h.opt.AccessLog:
		h.opt.Log.Info("request", attrs...)
	}
}

// recorder captures status and size for the access log; it passes Flush
// and the ResponseController methods through.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// tooLarge is the body error gitkit turns into 413.
type tooLarge struct{ max int64 }

func (e tooLarge) Error() string {
	return fmt.Sprintf("request body exceeds the gate's limit of %d bytes", e.max)
}
func (tooLarge) HTTPStatus() int { return http.StatusRequestEntityTooLarge }

var _ gitkit.BodyError = tooLarge{}

type capReader struct {
	r    io.Reader
	left int64
	max  int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// One byte more than allowed tells "exactly at the limit" from "over".
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, tooLarge{c.max}
		}
		return 0, err
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// idleReader moves the connection's read deadline forward before every
// read, so a client that stops sending is cut off after idle.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	off  bool
}

func (i *idleReader) Read(p []byte) (int, error) {
	if !i.off {
		if err := i.rc.SetReadDeadline(time.Now().Add(i.idle)); err != nil {
			i.off = true // not supported by this connection; rely on the request timeout
		}
	}
	return i.r.Read(p)
}

// gzipReader opens the gzip stream lazily so a bad header becomes a body
// error (400) instead of a panic or a hang.
type gzipReader struct {
	src io.Reader
	zr  *gzip.Reader
}

func (g *gzipReader) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.src)
		if err != nil {
			return 0, fmt.Errorf("invalid gzip request body: %w", err)
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

// capBuffer keeps the first max bytes of a backend's stderr; the rest is
// drained and dropped so a chatty git never blocks on a full pipe.
type capBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}
