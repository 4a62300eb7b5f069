package server

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"terok.dev/sandbox/common/gatepolicy"
	"terok.dev/sandbox/gate/internal/pushcmd"
)

// reasonPolicyError refuses task pushes while the project's policy file
// cannot be read: the gate does not guess what it would have said.
const reasonPolicyError = "policy-error"

// pushPlan is what the policy decided for an allowed push: extra git
// configuration and the command list git gets (with "atomic" added, so a
// ref git refuses takes the whole push with it).
type pushPlan struct {
	config [][2]string
	list   []byte
	staged bool // received into a staging repository and scanned for secrets first
}

// applyPolicy checks a task's push against its project's policy
// (docs/gate.md, Push policy). It returns the plan for git, or nil after
// it has answered the refusal itself.
func (h *Handler) applyPolicy(w http.ResponseWriter, body io.Reader, o *op, repoDir string) *pushPlan {
	push := o.push
	if o.look.Admin || len(push.Commands) == 0 {
		return &pushPlan{list: push.Raw}
	}
	project := o.rt.Project()
	pol, _, err := gatepolicy.Load(h.opt.PolicyDir, project)
	if h.opt.PolicyDir == "" {
		pol, err = gatepolicy.Default(), nil
	}
	if err != nil {
		h.opt.Log.Error("refusing task pushes: the project's gate policy cannot be used", "project", project, "error", err.Error(),
			"next", "fix it with 'terok-sandbox gate policy "+project+" ...' or remove the file for the default policy")
		refs := map[string]string{}
		for _, c := range push.Commands {
			refs[c.Ref] = reasonPolicyError + ": the project's push policy cannot be read"
		}
		h.refusePush(w, body, o, reasonPolicyError, refs,
			"terok gate: push refused: the project's push policy cannot be read; the operator must fix it")
		return nil
	}
	updates := make([]gatepolicy.RefUpdate, len(push.Commands))
	for i, c := range push.Commands {
		updates[i] = gatepolicy.RefUpdate{Ref: c.Ref, Delete: c.Delete()}
	}
	if refusals := pol.Decide(updates, gatepolicy.Push{Head: headTarget(repoDir), Task: o.look.Task}); len(refusals) > 0 {
		refs := map[string]string{}
		var msg strings.Builder
		msg.WriteString("terok gate: push refused by the project's policy; nothing was updated:\n")
		for _, r := range refusals {
			refs[r.Ref] = r.Reason + ": " + r.Msg
			msg.WriteString("  " + r.Msg + "\n")
		}
		h.refusePush(w, body, o, refusals[0].Reason, refs, msg.String())
		return nil
	}
	plan := &pushPlan{}
	if !pol.AllowNonFastForward {
		plan.config = append(plan.config, [2]string{"receive.denyNonFastForwards", "true"})
	}
	if !pol.AllowDeletions {
		plan.config = append(plan.config, [2]string{"receive.denyDeletes", "true"})
	}
	caps := push.Caps
	if !push.HasCap("atomic") {
		caps = append(append([]string(nil), caps...), "atomic")
	}
	plan.list = push.Encode(caps)
	plan.staged = h.opt.SecretScan
	return plan
}

// refusePush answers a push without running git: the rest of the body is
// read first (bounded by the body limits), because git's HTTP client
// reports a connection closed under a request it is still sending instead
// of the answer; then a receive-pack result whose progress band carries
// msg and whose report-status says "ng" for every ref.
func (h *Handler) refusePush(w http.ResponseWriter, body io.Reader, o *op, reason string, refs map[string]string, msg string) {
	o.reason, o.refErr = reason, refs
	_, _ = io.Copy(io.Discard, body)
	w.Header().Set("Content-Type", "application/x-git-receive-pack-result")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(pushcmd.Refusal(o.push, msg, refs, "refused with the rest of the push (atomic)"))
}

// headTarget is the ref the repository's HEAD points to, "" when HEAD is
// detached, missing or not a plain file.
func headTarget(repoDir string) string {
	f, err := os.OpenFile(filepath.Join(repoDir, "HEAD"), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, headMax))
	if err != nil {
		return ""
	}
	ref, ok := bytes.CutPrefix(bytes.TrimSpace(data), []byte("ref: "))
	if !ok || gatepolicy.CheckRefName(string(ref)) != nil {
		return ""
	}
	return string(ref)
}
