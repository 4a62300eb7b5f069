package mirror

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/gatepolicy"
)

// Pushed is a ref of the mirror that a task pushed through the gate and
// that upstream does not have yet (docs/gate.md, Push review).
type Pushed struct {
	Ref          string `json:"ref"`
	ID           string `json:"id"`
	UpstreamID   string `json:"upstream_id,omitempty"` // the upstream ref of the same name, when it exists
	Commits      int    `json:"commits"`               // commits not reachable from any upstream ref
	FilesChanged int    `json:"files_changed"`         // diffstat against the merge base with the default branch
	Insertions   int    `json:"insertions"`
	Deletions    int    `json:"deletions"`
	Base         string `json:"base,omitempty"` // the default branch the diffstat is taken against
	Task         string `json:"task"`
	TokenPrefix  string `json:"token_prefix,omitempty"`
	PushedAt     string `json:"pushed_at"`
}

// upstreamURL is --upstream, else the mirror's origin.
func (m *Manager) upstreamURL(ctx context.Context) (string, error) {
	if m.o.UpstreamURL != "" {
		return m.o.UpstreamURL, nil
	}
	r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "config", "--get", "remote.origin.url")
	if u := strings.TrimSpace(r.stdout); err == nil && u != "" {
		return u, nil
	}
	return "", errors.New("no upstream: the mirror has no origin; pass --upstream URL")
}

// upstreamRefs lists upstream's branches and tags (ls-remote with the
// project key).
func (m *Manager) upstreamRefs(ctx context.Context, upstream string) (map[string]string, error) {
	env, stop, err := m.sshEnv()
	if err != nil {
		return nil, err
	}
	defer stop()
	r, err := m.git(ctx, LsRemoteTimeout, env, "ls-remote", "--heads", "--tags", "--", upstream)
	if err != nil {
		return nil, fmt.Errorf("could not list upstream %s: %s", RedactURL(upstream), firstNonEmpty(r.stderr, err.Error()))
	}
	refs := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		id, ref, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok && !strings.HasSuffix(ref, "^{}") {
			refs[ref] = id
		}
	}
	return refs, nil
}

// Review lists the refs of the mirror whose last successful gate push
// (read from the gate's audit files) was by a task (task "" = any) and
// whose commits upstream does not have.
func (m *Manager) Review(ctx context.Context, auditFiles []string, task string) ([]Pushed, error) {
	if !m.exists() {
		return nil, fmt.Errorf("no gate mirror at %s; run 'terok-sandbox gate sync' first", m.o.GatePath)
	}
	pushes, err := lastPushes(auditFiles, m.o.ProjectID)
	if err != nil {
		return nil, err
	}
	upstream, err := m.upstreamURL(ctx)
	if err != nil {
		return nil, err
	}
	up, err := m.upstreamRefs(ctx, upstream)
	if err != nil {
		return nil, err
	}
	r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
	if err != nil {
		return nil, fmt.Errorf("list mirror refs: %s", firstNonEmpty(r.stderr, err.Error()))
	}
	// The upstream ids the mirror has objects for: what "upstream has it" is
	// measured against.
	var have []string
	for _, id := range up {
		if m.hasCommit(ctx, id) {
			have = append(have, "^"+id)
		}
	}
	sort.Strings(have)
	base := m.defaultBranch(ctx, up)
	out := []Pushed{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		ref, id, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		rec, pushed := pushes[ref]
		if !pushed || rec.Task == "" || (task != "" && rec.Task != task) || up[ref] == id {
			continue
		}
		p := Pushed{Ref: ref, ID: id, UpstreamID: up[ref], Task: rec.Task, TokenPrefix: rec.TokenPrefix,
			PushedAt: rec.Time.UTC().Format("2006-01-02T15:04:05Z")}
		n, err := m.count(ctx, id, have)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			continue // every commit is upstream already (promoted)
		}
		p.Commits = n
		if base != "" {
			p.Base = base
			p.FilesChanged, p.Insertions, p.Deletions = m.diffstat(ctx, base, id)
		}
		out = append(out, p)
	}
	return out, nil
}

func (m *Manager) hasCommit(ctx context.Context, id string) bool {
	_, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "cat-file", "-e", id+"^{commit}")
	return err == nil
}

// count is the number of commits of id that none of the (negated) upstream
// ids reaches.
func (m *Manager) count(ctx context.Context, id string, not []string) (int, error) {
	args := append([]string{"-C", m.o.GatePath, "rev-list", "--count", id}, not...)
	r, err := m.git(ctx, localTimeout, nil, append(args, "--")...)
	if err != nil {
		return 0, fmt.Errorf("count commits of %s: %s", id, firstNonEmpty(r.stderr, err.Error()))
	}
	return strconv.Atoi(strings.TrimSpace(r.stdout))
}

// defaultBranch is the branch the diffstat is taken against: --default-branch,
// else the mirror's HEAD, when the mirror has it.
func (m *Manager) defaultBranch(ctx context.Context, up map[string]string) string {
	ref := ""
	if m.o.DefaultBranch != "" && ValidBranch(m.o.DefaultBranch) {
		ref = "refs/heads/" + m.o.DefaultBranch
	} else if r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "symbolic-ref", "-q", "HEAD"); err == nil {
		ref = strings.TrimSpace(r.stdout)
	}
	if ref == "" {
		return ""
	}
	if id := up[ref]; id != "" && m.hasCommit(ctx, id) {
		return id
	}
	if m.hasCommit(ctx, ref) {
		return ref
	}
	return ""
}

var shortstat = regexp.MustCompile(`(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?`)

func (m *Manager) diffstat(ctx context.Context, base, id string) (files, ins, del int) {
	r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "diff", "--shortstat", base+"..."+id, "--")
	if err != nil {
		return 0, 0, 0
	}
	s := shortstat.FindStringSubmatch(r.stdout)
	if s == nil {
		return 0, 0, 0
	}
	files, _ = strconv.Atoi(s[1])
	ins, _ = strconv.Atoi(s[2])
	del, _ = strconv.Atoi(s[3])
	return files, ins, del
}

// lastPushes maps each ref of project to the newest gate audit record
// that updated it successfully (a deletion removes it).
func lastPushes(files []string, project string) (map[string]audit.Record, error) {
	recs, err := audit.Merge(nil, files...)
	if err != nil {
		return nil, fmt.Errorf("read gate audit records: %w", err)
	}
	out := map[string]audit.Record{}
	for _, r := range recs {
		if r.Channel != "gate" || r.Event != "push" || r.Outcome != "ok" || r.Project != project {
			continue
		}
		refs, _ := r.Fields["refs"].([]any)
		for _, x := range refs {
			o, _ := x.(map[string]any)
			ref, _ := o["ref"].(string)
			nw, _ := o["new"].(string)
			if ref == "" {
				continue
			}
			if strings.Trim(nw, "0") == "" {
				delete(out, ref)
				continue
			}
			out[ref] = r
		}
	}
	return out, nil
}

// FullRef turns a branch name into refs/heads/NAME; a full ref stays.
func FullRef(ref string) (string, error) {
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	if err := gatepolicy.CheckRefName(ref); err != nil {
		return "", err
	}
	return ref, nil
}

// PromoteResult is what Promote did.
type PromoteResult struct {
	Ref      string `json:"ref"`
	ID       string `json:"id"`
	To       string `json:"to"`
	OldID    string `json:"old_id,omitempty"` // the upstream branch before, when it existed
	Forced   bool   `json:"forced"`
	Upstream string `json:"upstream"` // without credentials
}

// Promote pushes the mirror's ref to upstream branch to (fast-forward only
// unless force) with the project key, then moves the mirror's own copy of
// that branch. No hook runs (core.hooksPath=/dev/null).
func (m *Manager) Promote(ctx context.Context, ref, to string, force bool) (PromoteResult, error) {
	res := PromoteResult{Ref: ref, To: to, Forced: force}
	if !m.exists() {
		return res, fmt.Errorf("no gate mirror at %s; run 'terok-sandbox gate sync' first", m.o.GatePath)
	}
	r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "rev-parse", "--verify", "-q", ref+"^{commit}")
	if err != nil {
		return res, fmt.Errorf("the mirror has no commit %s; see 'terok-sandbox gate review %s'", ref, m.o.ProjectID)
	}
	res.ID = strings.TrimSpace(r.stdout)
	upstream, err := m.upstreamURL(ctx)
	if err != nil {
		return res, err
	}
	res.Upstream = RedactURL(upstream)
	if up, err := m.upstreamRefs(ctx, upstream); err == nil {
		res.OldID = up[to]
	}
	env, stop, err := m.sshEnv()
	if err != nil {
		return res, err
	}
	defer stop()
	spec := res.ID + ":" + to
	if force {
		spec = "+" + spec
	}
	r, err = m.git(ctx, UpdateTimeout, env, "-C", m.o.GatePath, "-c", "core.hooksPath=/dev/null", "push", "--porcelain", "--", upstream, spec)
	if err != nil {
		msg := firstNonEmpty(pushRejection(r.stdout), r.stderr, err.Error())
		if !force && (strings.Contains(msg, "non-fast-forward") || strings.Contains(msg, "fetch first")) {
			msg += "; upstream has commits the ref does not: rebase it, or pass --force to overwrite"
		}
		return res, fmt.Errorf("promote %s to %s: %s", ref, to, msg)
	}
	if strings.HasPrefix(to, "refs/heads/") {
		if r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "update-ref", to, res.ID); err != nil {
			m.o.Log.Warn("promoted, but the mirror's copy of the branch was not moved", "branch", to, "error", firstNonEmpty(r.stderr, err.Error()),
				"next", "run 'terok-sandbox gate sync' for the project")
		}
	}
	return res, nil
}

// pushRejection is the rejected line of `git push --porcelain`.
func pushRejection(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "!") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// Reject deletes ref from the mirror (never its default branch). It
// returns the id the ref had.
func (m *Manager) Reject(ctx context.Context, ref string) (string, error) {
	if !m.exists() {
		return "", fmt.Errorf("no gate mirror at %s; run 'terok-sandbox gate sync' first", m.o.GatePath)
	}
	r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "rev-parse", "--verify", "-q", ref)
	if err != nil {
		return "", fmt.Errorf("the mirror has no ref %s; see 'terok-sandbox gate review %s'", ref, m.o.ProjectID)
	}
	id := strings.TrimSpace(r.stdout)
	if h, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "symbolic-ref", "-q", "HEAD"); err == nil && strings.TrimSpace(h.stdout) == ref {
		return "", fmt.Errorf("%s is the mirror's default branch; it is never rejected", ref)
	}
	if r, err := m.git(ctx, localTimeout, nil, "-C", m.o.GatePath, "update-ref", "-d", ref, id); err != nil {
		return "", fmt.Errorf("delete %s: %s", ref, firstNonEmpty(r.stderr, err.Error()))
	}
	return id, nil
}

// RedactURL drops the user information (a password or token) of a URL.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		if at := strings.LastIndex(u, "@"); at >= 0 && strings.Contains(u[:at], "://") {
			return u[:strings.Index(u, "://")+3] + u[at+1:]
		}
		return u
	}
	p.User = nil
	return p.String()
}
