package server

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/gate/internal/gitop"
	"terok.dev/sandbox/gate/internal/pushcmd"
	"terok.dev/sandbox/gate/internal/route"
	"terok.dev/sandbox/gate/internal/secretscan"
	"terok.dev/sandbox/gate/internal/tokens"
)

// Refusal reasons of the gate's audit records (docs/audit.md, Channel gate).
const (
	reasonUnknownToken   = "unknown-token"
	reasonRevoked        = "revoked"
	reasonExpired        = "expired"
	reasonTaskGone       = "task-gone"
	reasonWrongProject   = "wrong-project"
	reasonProtected      = "protected-ref"
	reasonNonFastForward = "non-fast-forward"
	reasonDeletion       = "deletion"
	reasonNamespace      = "namespace"
)

// reportCap is how much of a receive-pack answer is kept to read git's
// report-status (a report names every ref once; 64 KiB covers thousands).
const reportCap = 64 << 10

// op collects what one request's audit record says. Only requests that
// presented a token are recorded: the credential-less first request of
// every clone (401 by design) is not an operation.
type op struct {
	token   string // the token as sent; only its prefix is written
	look    tokens.Result
	rt      route.Route
	event   string
	proto   string
	reason  string
	opEvent bool // a git operation even when it succeeds
	scan    *gitop.Scanner
	in      *countReader
	push    *pushcmd.Request
	refErr  map[string]string // per ref, why the gate refused the push
	secret  *secretscan.Finding
	report  *headCapture
	rpcOK   bool
}

// refusalEvent names a request by its route before its body is read.
func (o *op) classify(r *http.Request) {
	o.proto = "v0"
	if wantsV2(r.Header.Get("Git-Protocol")) {
		o.proto = "v2"
	}
	switch o.rt.Path {
	case route.ReceivePack:
		o.event, o.opEvent = "push", true
	case route.UploadPack:
		o.event, o.opEvent = gitop.Fetch, true
		o.scan = &gitop.Scanner{}
	case route.InfoRefs:
		q, _ := url.ParseQuery(o.rt.Query)
		if q.Get("service") == "git-receive-pack" {
			o.event = "push"
		} else {
			o.event = gitop.LsRefs
			// Protocol v0 lists the refs here; v2 only advertises
			// capabilities and lists refs with an ls-refs request.
			o.opEvent = o.proto == "v0"
		}
	default:
		o.event = gitop.Fetch
	}
}

type refRecord struct {
	Ref   string `json:"ref"`
	Old   string `json:"old"`
	New   string `json:"new"`
	Error string `json:"error,omitempty"`
}

// finish settles the request's outcome once, for its audit record (when
// it is one, see op) and its metrics, so both say the same.
func (h *Handler) finish(r *http.Request, rec *recorder, o *op, start time.Time) {
	if h.opt.Audit == nil && h.opt.Metrics == nil {
		return
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	var refs []refRecord
	if o.push != nil {
		refs = make([]refRecord, len(o.push.Commands))
		for i, c := range o.push.Commands {
			refs[i] = refRecord{Ref: c.Ref, Old: c.Old, New: c.New, Error: o.refErr[c.Ref]}
		}
	}
	outcome, reason := h.outcome(o, status, refs)
	event := o.event
	if o.scan != nil {
		event = o.scan.Event()
	}
	var in int64
	if o.in != nil {
		in = o.in.n
	}
	h.opt.Metrics.Request(event, outcome, reason, in, rec.bytes, time.Since(start))
	h.audit(r, rec, o, start, auditOutcome{status: status, event: event, outcome: outcome, reason: reason, refs: refs})
}

// outcome is the audit vocabulary's outcome and reason of a finished
// request (docs/audit.md, Channel gate).
func (h *Handler) outcome(o *op, status int, refs []refRecord) (outcome, reason string) {
	ar := audit.Record{Outcome: "ok", Reason: o.reason}
	switch {
	case o.reason != "":
		ar.Outcome = "refused"
	case status >= 500:
		ar.Outcome, ar.Reason = "error", "server-error"
	case status >= 400:
		ar.Outcome, ar.Reason = "refused", httpReason(status)
	}
	if o.push != nil && ar.Outcome == "ok" {
		h.pushOutcome(&ar, refs, o)
	}
	return ar.Outcome, ar.Reason
}

type auditOutcome struct {
	status          int
	event           string
	outcome, reason string
	refs            []refRecord
}

// audit writes the request's record when it is one (see op).
func (h *Handler) audit(r *http.Request, rec *recorder, o *op, start time.Time, res auditOutcome) {
	if h.opt.Audit == nil || o.token == "" || o.event == "" {
		return
	}
	if res.status < 400 && !o.opEvent {
		return
	}
	ar := audit.Record{Channel: "gate", Event: res.event, Outcome: res.outcome, Reason: res.reason,
		TokenPrefix: audit.TokenPrefix(o.token), Project: o.look.Project, Task: o.look.Task}
	f := map[string]any{"repo": o.rt.Repo, "status": res.status, "resp_bytes": rec.bytes,
		"duration_ms": time.Since(start).Milliseconds(), "remote": r.RemoteAddr, "protocol": o.proto}
	if o.look.Admin {
		ar.Project = o.rt.Project()
		f["admin"] = true
	}
	if o.in != nil {
		f["req_bytes"] = o.in.n
	}
	if o.look.Gone {
		ar.Container = o.look.Container
		f["task_end"] = o.look.End
	}
	if refs := res.refs; o.push != nil {
		// Refused before git ran (the gate's own outcome): every ref
		// shares the refusal.
		if (o.reason != "" || res.status >= 400) && o.refErr != nil {
			for i := range refs {
				if refs[i].Error == "" {
					refs[i].Error = "refused with the rest of the push (atomic)"
				}
			}
		}
		f["refs"] = refs
	}
	if o.secret != nil {
		f["secret"] = o.secret // where and what kind, never the text
	}
	ar.Fields = f
	if err := h.opt.Audit.Write(ar); err != nil {
		h.opt.Log.Warn("cannot write audit record", "error", err.Error(), "next", "check the audit file's directory and free space")
	}
}

// lookupResult names a token lookup for the metrics.
func lookupResult(l tokens.Result) string {
	switch {
	case l.OK:
		return "found"
	case l.Gone:
		return reasonTaskGone
	case l.Expired:
		return reasonExpired
	case l.Revoked:
		return reasonRevoked
	}
	return "unknown" // the proxy's name for the same result (docs/operations.md, Metrics)
}

// pushOutcome reads git's report-status: every ref "ok" is a successful
// push; an "ng" from git (non-fast-forward under
// receive.denyNonFastForwards, a stale old id, ...) refuses it.
func (h *Handler) pushOutcome(ar *audit.Record, refs []refRecord, o *op) {
	if len(o.push.Commands) == 0 {
		return
	}
	sb, _ := o.push.Sideband()
	rep, ok := pushcmd.ParseReport(o.report.buf, sb)
	if !ok {
		if !o.rpcOK {
			ar.Outcome, ar.Reason = "error", "git-failed"
		}
		return
	}
	if rep.Unpack != "ok" {
		ar.Outcome, ar.Reason = "error", "unpack"
	}
	for i := range refs {
		why, seen := rep.Refs[refs[i].Ref]
		if !seen {
			continue
		}
		if why == "" {
			continue
		}
		refs[i].Error = why
		if ar.Outcome == "ok" {
			ar.Outcome, ar.Reason = "refused", gitReason(why)
		}
		if gitReason(why) != "git-refused" {
			ar.Reason = gitReason(why)
		}
	}
}

// gitReason maps git's "ng" texts to the audit reasons.
func gitReason(why string) string {
	switch {
	case strings.Contains(why, "non-fast-forward"):
		return reasonNonFastForward
	case strings.Contains(why, "deletion prohibited") || strings.Contains(why, "delete"):
		return reasonDeletion
	}
	return "git-refused"
}

func httpReason(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "no-credentials" // metrics only: the audit records token holders
	case http.StatusNotFound:
		return "not-found"
	case http.StatusMethodNotAllowed:
		return "method"
	case http.StatusRequestEntityTooLarge:
		return "too-large"
	}
	return "bad-request"
}

// countReader counts the request body bytes as received.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countReader) Close() error { return nil }

// headCapture passes a response through and keeps its first max bytes.
type headCapture struct {
	http.ResponseWriter
	buf []byte
	max int
}

func (c *headCapture) Write(p []byte) (int, error) {
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return c.ResponseWriter.Write(p)
}

func (c *headCapture) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *headCapture) Unwrap() http.ResponseWriter { return c.ResponseWriter }
