package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/gate/internal/tokens"
)

// TestCachedAdvertisementsStayCorrect counts the git processes behind
// protocol v2 clones and checks that cached ls-refs answers follow every
// ref change.
func TestCachedAdvertisementsStayCorrect(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "gate")
	genv := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t",
		"GIT_AUTHOR_EMAIL=t@x.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x.invalid", "GIT_TERMINAL_PROMPT=0"}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = genv
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	src := filepath.Join(dir, "src")
	git("init", "-q", "-b", "main", src)
	git("-C", src, "commit", "-q", "--allow-empty", "-m", "one")
	git("clone", "-q", "--mirror", src, filepath.Join(base, "p.git"))
	tokfile := filepath.Join(base, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "p", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "git.log")
	realGit, _ := exec.LookPath("git")
	wrapper := filepath.Join(dir, "git-wrapper")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\nexec "+realGit+" \"$@\"\n"), 0o755)
	h, err := New(Options{BasePath: base, Store: tokens.New(tokfile, "", nil), GitPath: wrapper})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	url := strings.Replace(srv.URL, "http://", "http://"+tok+"@", 1) + "/p.git"
	for i := 0; i < 3; i++ {
		git("-c", "protocol.version=2", "clone", "-q", url, filepath.Join(dir, "c"+string(rune('0'+i))))
	}
	git("-C", filepath.Join(dir, "c2"), "fsck", "--full") // served from the fetch cache
	data, _ := os.ReadFile(log)
	adv, rpc := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		switch {
		case strings.Contains(l, "--advertise-refs"):
			adv++
		case strings.HasPrefix(l, "upload-pack"):
			rpc++
		}
	}
	// One ls-refs and one fetch: the two later clones come from the cache.
	if adv != 1 || rpc != 2 {
		t.Fatalf("3 clones ran %d advertisements and %d upload-packs, want 1 and 2 (cached):\n%s", adv, rpc, data)
	}
	lsRemote := func() string { return git("-c", "protocol.version=2", "ls-remote", url) }
	before := lsRemote()
	// Push a branch through the gate: the next ls-refs must show it.
	c0 := filepath.Join(dir, "c0")
	git("-C", c0, "commit", "-q", "--allow-empty", "-m", "two")
	git("-C", c0, "push", "-q", "origin", "HEAD:refs/heads/new")
	after := lsRemote()
	if after == before || !strings.Contains(after, "refs/heads/new") {
		t.Fatalf("ls-refs after push still cached:\n%s", after)
	}
	// Moving a ref outside the gate and packing refs are seen as well.
	head := git("-C", c0, "rev-parse", "HEAD")
	git("-C", filepath.Join(base, "p.git"), "update-ref", "refs/heads/main", head)
	if got := lsRemote(); !strings.Contains(got, head+"\trefs/heads/main") {
		t.Fatalf("ls-refs after update-ref:\n%s", got)
	}
	git("-C", filepath.Join(base, "p.git"), "update-ref", "-d", "refs/heads/new")
	git("-C", filepath.Join(base, "p.git"), "pack-refs", "--all")
	if got := lsRemote(); strings.Contains(got, "refs/heads/new") {
		t.Fatalf("deleted ref still listed:\n%s", got)
	}
}

func TestGitMissingAndQueueFull(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "gate")
	if out, err := exec.Command("git", "init", "-q", "--bare", filepath.Join(base, "p.git")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tokfile := filepath.Join(base, "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "p", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	get := func(h *Handler, method, path, body string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.SetBasicAuth(tok, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	h, err := New(Options{BasePath: base, Store: tokens.New(tokfile, "", nil), GitPath: filepath.Join(dir, "no-git")})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(h, "GET", "/p.git/info/refs?service=git-upload-pack", ""); code != 500 || body != "git not found\n" {
		t.Fatalf("missing git: %d %q", code, body)
	}

	// One slot: a request holding it makes the next one wait, then 503.
	marker := filepath.Join(dir, "started")
	realGit, _ := exec.LookPath("git")
	slow := filepath.Join(dir, "slow-git")
	fifo := filepath.Join(dir, "release")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// The fake git holds its slot until the test releases it.
	os.WriteFile(slow, []byte("#!/bin/sh\ntouch "+marker+"\nread x < "+fifo+"\nexec "+realGit+" \"$@\"\n"), 0o755)
	h, err = New(Options{BasePath: base, Store: tokens.New(tokfile, "", nil), GitPath: slow, MaxBackends: 1, QueueWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	first := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("GET", srv.URL+"/p.git/info/refs?service=git-receive-pack", nil)
		req.SetBasicAuth(tok, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first request never started git")
		}
		time.Sleep(10 * time.Millisecond)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/p.git/info/refs?service=git-receive-pack", nil)
	req.SetBasicAuth(tok, "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("queue full: %d", resp.StatusCode)
	}
	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code := <-first; code != 200 {
		t.Fatalf("first request: %d", code)
	}
}
