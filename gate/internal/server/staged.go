package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"terok.dev/sandbox/gate/internal/pushcmd"
	"terok.dev/sandbox/gate/internal/secretscan"
)

// Secret scanning on push (docs/gate.md, Secret scanning): a task's push is
// received into a staging repository inside the mirror directory whose
// objects/info/alternates point at the mirror, by the same git
// receive-pack (policy configuration, atomic) with its answer held back.
// When git accepted every ref, the new blobs are scanned; only a clean push
// has its pack moved into the mirror and its refs updated there in one
// `git update-ref --stdin` transaction that checks the old ids. No hook
// runs anywhere.

const (
	reasonSecret = "secret-found"
	// stagedOutMax bounds git's held-back answer (progress and report).
	stagedOutMax = 4 << 20
	// scanBlobMax: larger blobs are not scanned (documented).
	scanBlobMax = 16 << 20
)

// stagedPush runs the push through the staging repository. It answers the
// client itself.
func (h *Handler) stagedPush(ctx context.Context, w http.ResponseWriter, body io.Reader, o *op, plan *pushPlan, repoDir string, st *reqState) {
	fail := func(err error) {
		h.opt.Log.Error("push failed in the gate", "repo", o.rt.Repo, "error", err.Error())
		refs := map[string]string{}
		for _, c := range o.push.Commands {
			refs[c.Ref] = "gate error, nothing was updated"
		}
		h.refusePush(w, body, o, "gate-error", refs, "terok gate: the push could not be completed; nothing was updated (the operator finds the cause in the gate's log)")
	}
	stage, err := os.MkdirTemp(repoDir, "terok-push-")
	if err != nil {
		fail(fmt.Errorf("create staging repository: %w", err))
		return
	}
	defer os.RemoveAll(stage)
	if err := h.layoutStage(stage, repoDir, o.push); err != nil {
		fail(err)
		return
	}
	cfg := append(append([][2]string(nil), plan.config...), [2]string{"receive.unpackLimit", "1"}, [2]string{"transfer.unpackLimit", "1"})
	cmd := exec.CommandContext(ctx, h.git(), "receive-pack", "--stateless-rpc", stage)
	cmd.Env = backendEnv(h.opt.Getenv, cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Stdin = body // the command list (plan.list) and the rest of the request
	out := &capBuffer{max: stagedOutMax}
	cmd.Stdout, cmd.Stderr = out, st.stderr
	runErr := cmd.Run()
	answer := []byte(out.String())
	sb, _ := o.push.Sideband()
	rep, ok := pushcmd.ParseReport(answer, sb)
	o.report = &headCapture{buf: answer, max: reportCap}
	o.rpcOK = runErr == nil
	if runErr != nil && !ok {
		fail(fmt.Errorf("git receive-pack in the staging repository: %v", runErr))
		return
	}
	accepted := ok && rep.Unpack == "ok"
	for _, c := range o.push.Commands {
		if why, seen := rep.Refs[c.Ref]; !seen || why != "" {
			accepted = false
		}
	}
	if accepted {
		f, found, err := h.scanPush(ctx, stage, o.push)
		if err != nil {
			fail(err)
			return
		}
		if found {
			where := fmt.Sprintf("%s:%d (%s)", f.Path, f.Line, f.Kind)
			o.secret = &f
			refs := map[string]string{}
			for _, c := range o.push.Commands {
				refs[c.Ref] = reasonSecret + ": " + where
			}
			h.refusePush(w, body, o, reasonSecret, refs, "terok gate: push refused: the pushed commits contain a credential at "+where+
				"; nothing was updated. Remove it from every commit of the push (rewrite the history, not just the last commit) and push again.")
			return
		}
		if err := h.commitStage(ctx, stage, repoDir, o.push); err != nil {
			fail(err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-git-receive-pack-result")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer)
}

// layoutStage makes stage a bare repository that borrows the mirror's
// objects and holds the pushed refs at their old ids.
func (h *Handler) layoutStage(stage, repoDir string, push *pushcmd.Request) error {
	for _, d := range []string{"objects/info", "objects/pack", "refs/heads", "refs/tags"} {
		if err := os.MkdirAll(filepath.Join(stage, d), 0o700); err != nil {
			return fmt.Errorf("staging repository: %w", err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(repoDir, "config"))
	if err != nil {
		conf = []byte("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
	}
	files := map[string][]byte{
		"HEAD":                    []byte("ref: refs/heads/terok-staging\n"),
		"config":                  conf,
		"objects/info/alternates": []byte(filepath.Join(repoDir, "objects") + "\n"),
	}
	for _, c := range push.Commands {
		if !c.Create() {
			files[c.Ref] = []byte(c.Old + "\n")
		}
	}
	// In name order, not map order: refs that collide as file and directory
	// (refs/heads/a and refs/heads/a/b) fail the same way every time.
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		data := files[name]
		p := filepath.Join(stage, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("staging repository: %w", err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return fmt.Errorf("staging repository: %w", err)
		}
	}
	return nil
}

// scanPush scans the blobs the push brings that the mirror's refs do not
// reach (rev-list --objects ... --not --alternate-refs), the first finding
// wins.
func (h *Handler) scanPush(ctx context.Context, stage string, push *pushcmd.Request) (secretscan.Finding, bool, error) {
	args := []string{"-C", stage, "rev-list", "--objects", "--filter=object:type=blob"}
	n := 0
	for _, c := range push.Commands {
		if !c.Delete() {
			args = append(args, c.New)
			n++
		}
	}
	if n == 0 {
		return secretscan.Finding{}, false, nil
	}
	args = append(args, "--not", "--alternate-refs")
	list := exec.CommandContext(ctx, h.git(), args...)
	list.Env = h.baseEnv
	listOut, err := list.Output()
	if err != nil {
		return secretscan.Finding{}, false, fmt.Errorf("list the pushed objects: %v", err)
	}
	paths := map[string]string{}
	var ids bytes.Buffer
	for _, line := range strings.Split(string(listOut), "\n") {
		id, path, ok := strings.Cut(line, " ")
		if !ok {
			continue // a commit
		}
		if _, dup := paths[id]; !dup {
			paths[id] = path
			ids.WriteString(id + "\n")
		}
	}
	if len(paths) == 0 {
		return secretscan.Finding{}, false, nil
	}
	cat := exec.CommandContext(ctx, h.git(), "-C", stage, "cat-file", "--batch")
	cat.Env = h.baseEnv
	cat.Stdin = &ids
	pipe, err := cat.StdoutPipe()
	if err != nil {
		return secretscan.Finding{}, false, err
	}
	if err := cat.Start(); err != nil {
		return secretscan.Finding{}, false, fmt.Errorf("read the pushed objects: %v", err)
	}
	defer func() { _ = cat.Process.Kill(); _ = cat.Wait() }()
	rd := bufio.NewReaderSize(pipe, 1<<20)
	var buf []byte
	for {
		hdr, err := rd.ReadString('\n')
		if err == io.EOF {
			return secretscan.Finding{}, false, nil
		}
		if err != nil {
			return secretscan.Finding{}, false, fmt.Errorf("read the pushed objects: %v", err)
		}
		f := strings.Fields(hdr)
		if len(f) != 3 {
			return secretscan.Finding{}, false, fmt.Errorf("read the pushed objects: unexpected %q", strings.TrimSpace(hdr))
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || size < 0 {
			return secretscan.Finding{}, false, fmt.Errorf("read the pushed objects: bad size in %q", strings.TrimSpace(hdr))
		}
		if size > scanBlobMax || f[1] != "blob" {
			if _, err := io.CopyN(io.Discard, rd, size+1); err != nil {
				return secretscan.Finding{}, false, err
			}
			continue
		}
		if int64(cap(buf)) < size+1 {
			buf = make([]byte, size+1)
		}
		buf = buf[:size+1]
		if _, err := io.ReadFull(rd, buf); err != nil {
			return secretscan.Finding{}, false, err
		}
		if fd, ok := secretscan.Scan(paths[f[0]], buf[:size]); ok {
			return fd, true, nil
		}
	}
}

// commitStage moves the staged pack(s) and loose objects into the mirror,
// then updates the mirror's refs in one transaction that checks the old
// ids (a concurrent push makes it fail, and nothing is updated).
func (h *Handler) commitStage(ctx context.Context, stage, repoDir string, push *pushcmd.Request) error {
	packs, _ := filepath.Glob(filepath.Join(stage, "objects", "pack", "pack-*"))
	// The .idx goes last: git finds a pack by its index.
	order := func(p string) int {
		switch filepath.Ext(p) {
		case ".idx":
			return 2
		case ".keep":
			return 3
		}
		return 1
	}
	for pass := 1; pass <= 2; pass++ {
		for _, p := range packs {
			if order(p) == pass {
				if err := os.Rename(p, filepath.Join(repoDir, "objects", "pack", filepath.Base(p))); err != nil {
					return fmt.Errorf("move the pushed pack into the mirror: %w", err)
				}
			}
		}
	}
	loose, _ := filepath.Glob(filepath.Join(stage, "objects", "[0-9a-f][0-9a-f]", "*"))
	for _, p := range loose {
		dir := filepath.Join(repoDir, "objects", filepath.Base(filepath.Dir(p)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.Rename(p, filepath.Join(dir, filepath.Base(p))); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("move pushed objects into the mirror: %w", err)
		}
	}
	var tx strings.Builder
	tx.WriteString("start\n")
	for _, c := range push.Commands {
		switch {
		case c.Delete():
			fmt.Fprintf(&tx, "delete %s %s\n", c.Ref, c.Old)
		case c.Create():
			fmt.Fprintf(&tx, "create %s %s\n", c.Ref, c.New)
		default:
			fmt.Fprintf(&tx, "update %s %s %s\n", c.Ref, c.New, c.Old)
		}
	}
	tx.WriteString("prepare\ncommit\n")
	upd := exec.CommandContext(ctx, h.git(), "-C", repoDir, "update-ref", "--stdin")
	upd.Env = h.baseEnv
	upd.Stdin = strings.NewReader(tx.String())
	if out, err := upd.CombinedOutput(); err != nil {
		return fmt.Errorf("update the mirror's refs (did another push change them meanwhile?): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
