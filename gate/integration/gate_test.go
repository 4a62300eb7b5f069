package integration

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestCloneFetchPushBothProtocols(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	for _, v := range []string{"0", "2"} {
		t.Run("v"+v, func(t *testing.T) {
			dst := filepath.Join(f.dir, "clone-v"+v)
			f.git("", "-c", "protocol.version="+v, "clone", "-q", g.url(f.tokProj, "proj.git"), dst)
			if n := f.git(dst, "rev-list", "--count", "HEAD"); n != "3" {
				t.Fatalf("clone has %s commits, want 3", n)
			}
			// Push a new branch; it must land in the mirror.
			branch := "task-v" + v
			if err := os.WriteFile(filepath.Join(dst, "new.txt"), []byte("from task "+v), 0o644); err != nil {
				t.Fatal(err)
			}
			f.git(dst, "add", ".")
			f.git(dst, "commit", "-q", "-m", "task work")
			f.git(dst, "-c", "protocol.version="+v, "push", "-q", "origin", "HEAD:refs/heads/"+branch)
			want := f.git(dst, "rev-parse", "HEAD")
			if got := f.git(filepath.Join(f.base, "proj.git"), "rev-parse", "refs/heads/"+branch); got != want {
				t.Fatalf("mirror has %s for %s, want %s", got, branch, want)
			}
			// Fetch sees the other protocol's branch once it exists.
			f.git(dst, "-c", "protocol.version="+v, "fetch", "-q", "origin")
		})
	}
}

func TestProtocolAdvertisement(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	get := func(proto string) string {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/proj.git/info/refs?service=git-upload-pack", g.port), nil)
		req.SetBasicAuth(f.tokProj, "")
		if proto != "" {
			req.Header.Set("Git-Protocol", proto)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-git-upload-pack-advertisement" {
			t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return string(body)
	}
	if v0 := get(""); !strings.HasPrefix(v0, "001e# service=git-upload-pack\n0000") {
		t.Fatalf("v0 advertisement starts %q", v0[:40])
	}
	if v2 := get("version=2"); !strings.HasPrefix(v2, "000eversion 2\n") {
		t.Fatalf("v2 advertisement starts %q", v2[:20])
	}
}

func TestShallowAndPartialClone(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	// Each v2 clone twice: the second answer comes from the gate's fetch
	// cache and must be just as complete.
	for _, name := range []string{"shallow", "shallow-again"} {
		sh := filepath.Join(f.dir, name)
		f.git("", "clone", "-q", "--depth=1", g.url(f.tokProj, "proj.git"), sh)
		if n := f.git(sh, "rev-list", "--count", "HEAD"); n != "1" {
			t.Fatalf("%s clone has %s commits", name, n)
		}
		if _, err := os.Stat(filepath.Join(sh, ".git", "shallow")); err != nil {
			t.Fatalf("%s: no shallow file: %v", name, err)
		}
		f.git(sh, "fsck", "--full")
	}
	for i, v := range []string{"0", "2", "2"} {
		pc := filepath.Join(f.dir, fmt.Sprintf("partial-v%s-%d", v, i))
		f.git("", "-c", "protocol.version="+v, "clone", "-q", "--no-checkout", "--filter=blob:none", g.url(f.tokProj, "proj.git"), pc)
		if got := f.git(pc, "config", "remote.origin.partialclonefilter"); got != "blob:none" {
			t.Fatalf("v%s: partial clone filter %q", v, got)
		}
		// Blobs are missing until checkout fetches them lazily through the gate.
		missing := f.git(pc, "rev-list", "--objects", "--missing=print", "HEAD")
		if !strings.Contains(missing, "?") {
			t.Fatalf("v%s: no missing blobs in a blob:none clone:\n%s", v, missing)
		}
		f.git(pc, "-c", "protocol.version="+v, "checkout", "-q", "main")
		if _, err := os.Stat(filepath.Join(pc, "f2.txt")); err != nil {
			t.Fatalf("v%s: lazy blob fetch failed: %v", v, err)
		}
		f.git(pc, "fsck", "--full")
	}
}

func TestParallelClones(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			dst := filepath.Join(f.dir, fmt.Sprintf("par%d", i))
			if out, err := f.tryGit("", "clone", "-q", g.url(f.tokProj, "proj.git"), dst); err != nil {
				errs <- fmt.Sprintf("clone %d: %v %s", i, err, out)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestDenials(t *testing.T) {
	f := newFixture(t)
	// A repository symlinked to a place outside the base path.
	outside := filepath.Join(f.dir, "outside.git")
	f.git("", "clone", "-q", "--mirror", filepath.Join(f.dir, "src"), outside)
	if err := os.Symlink(outside, filepath.Join(f.base, "evil.git")); err != nil {
		t.Fatal(err)
	}
	evilTok, err := f.store.Create(names.TaskRef{Project: "evil", Task: "3"})
	if err != nil {
		t.Fatal(err)
	}
	g := f.startGate(nil, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	ir := "/proj.git/info/refs?service=git-upload-pack"
	for _, tc := range []struct {
		name, req string
		code      int
		contains  string
	}{
		{"no auth", "GET " + ir + " HTTP/1.1\r\nHost: x\r\n\r\n", 401, "Authentication required"},
		{"bearer", "GET " + ir + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + f.tokProj + "\r\n\r\n", 401, "WWW-Authenticate: Basic realm=\"terok gate\""},
		{"bad token", "GET " + ir + " HTTP/1.1\r\nHost: x\r\n" + basic("terok-g-00000000000000000000000000000000") + "\r\n", 403, "Forbidden"},
		{"other project", "GET /other.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(f.tokProj) + "\r\n", 403, "Forbidden"},
		{"dotdot", "GET /../other.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"inner dotdot", "GET /proj.git/../other.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"encoded dots", "GET /%2e%2e/proj.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"encoded slash", "GET /..%2fetc.git/info/refs HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"absolute", "GET //tmp/x.git/info/refs HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"absolute form", "GET http://x/proj.git/info/refs HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, "Not Found"},
		{"dumb object path", "GET /proj.git/objects/info/packs HTTP/1.1\r\nHost: x\r\n" + basic(f.tokProj) + "\r\n", 404, "Not Found"},
		{"symlink out of base", "GET /evil.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(evilTok) + "\r\n", 404, "Not Found"},
		{"missing repo (admin)", "GET /nope.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(adminTok) + "\r\n", 404, ""},
		{"unknown service", "GET /proj.git/info/refs?service=git-upload-archive HTTP/1.1\r\nHost: x\r\n" + basic(f.tokProj) + "\r\n", 404, ""},
		{"unknown route unauthenticated", "GET /secret HTTP/1.1\r\nHost: x\r\n\r\n", 404, "Not Found"},
		{"PUT", "PUT " + ir + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 501, "Unsupported method"},
		{"HEAD", "HEAD " + ir + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 501, ""},
		{"DELETE bad path", "DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", 501, ""},
		{"GET on rpc", "GET /proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n" + basic(f.tokProj) + "\r\n", 405, ""},
		{"bad content length", "POST /proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n" + basic(f.tokProj) + "\r\n", 400, ""},
		{"bad request line", "GARBAGE\r\n\r\n", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if !strings.Contains(req, "Connection:") && strings.HasSuffix(req, "\r\n\r\n") {
				req = strings.TrimSuffix(req, "\r\n") + "Connection: close\r\n\r\n"
			}
			code, resp := raw(t, g.port, req)
			if code != tc.code {
				t.Fatalf("status %d, want %d:\n%s", code, tc.code, resp)
			}
			if tc.contains != "" && !strings.Contains(resp, tc.contains) {
				t.Fatalf("response lacks %q:\n%s", tc.contains, resp)
			}
		})
	}
	// The admin token opens every project.
	f.git("", "clone", "-q", g.url(adminTok, "other.git"), filepath.Join(f.dir, "admin-clone"))
	// A real client with the wrong project's token is refused.
	if out, err := f.tryGit("", "clone", "-q", g.url(f.tokProj, "other.git"), filepath.Join(f.dir, "x")); err == nil {
		t.Fatalf("clone of another project's repository succeeded: %s", out)
	}
}

func TestTokenLifecycleHotReload(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	status := func(tok string) int {
		code, _ := raw(t, g.port, "GET /proj.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+basic(tok)+"\r\n")
		return code
	}
	// Created after the gate started: works on the next request.
	tok, err := f.store.Create(names.TaskRef{Project: "proj", Task: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if c := status(tok); c != 200 {
		t.Fatalf("new token: %d", c)
	}
	// Revoked: refused on the next request.
	if _, err := f.store.Revoke(names.TaskRef{Project: "proj", Task: "late"}); err != nil {
		t.Fatal(err)
	}
	if c := status(tok); c != 403 {
		t.Fatalf("revoked token: %d", c)
	}
	if c := status(f.tokProj); c != 200 {
		t.Fatalf("other token after revoke: %d", c)
	}
	// Corrupt file: every task token refused, the admin token still works.
	if err := os.WriteFile(f.tokfile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c := status(f.tokProj); c != 403 {
		t.Fatalf("token with corrupt file: %d", c)
	}
	if c := status(adminTok); c != 200 {
		t.Fatalf("admin with corrupt file: %d", c)
	}
}

func TestHooksNeverRun(t *testing.T) {
	f := newFixture(t)
	repo := filepath.Join(f.base, "proj.git")
	marker := filepath.Join(f.dir, "hook-ran")
	script := "#!/bin/sh\necho ran >> " + marker + "\n"
	alt := filepath.Join(f.dir, "althooks")
	if err := os.MkdirAll(alt, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(repo, "hooks"), alt} {
		for _, h := range []string{"pre-receive", "update", "post-receive", "post-update", "reference-transaction", "push-to-checkout"} {
			if err := os.WriteFile(filepath.Join(dir, h), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Even a hooks path in the repository's own config is overridden.
	f.git(repo, "config", "core.hooksPath", alt)
	g := f.startGate(nil)
	dst := filepath.Join(f.dir, "c")
	f.git("", "clone", "-q", g.url(f.tokProj, "proj.git"), dst)
	if err := os.WriteFile(filepath.Join(dst, "h.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "push")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/hooked")
	f.git(repo, "rev-parse", "refs/heads/hooked")
	// Sanity: the planted hook does run for a direct local push.
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a repository hook ran for gate traffic")
	}
	f.git(dst, "push", "-q", repo, "HEAD:refs/heads/direct")
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("control: the planted hook did not run for a local push either, so the test proves nothing: %v", err)
	}
}

func TestLargePushChunkedAndGzip(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	dst := filepath.Join(f.dir, "c")
	f.git("", "clone", "-q", g.url(f.tokProj, "proj.git"), dst)
	blob := make([]byte, 3<<20) // larger than git's 1 MiB post buffer: chunked body
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(dst, "big.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f.git(dst, "add", ".")
	f.git(dst, "commit", "-q", "-m", "big")
	f.git(dst, "push", "-q", "origin", "HEAD:refs/heads/big")
	if got, want := f.git(filepath.Join(f.base, "proj.git"), "rev-parse", "refs/heads/big"), f.git(dst, "rev-parse", "HEAD"); got != want {
		t.Fatalf("big push: mirror %s, want %s", got, want)
	}
	// A gzip-encoded upload-pack request (git gzips large negotiations).
	head := f.git(filepath.Join(f.base, "proj.git"), "rev-parse", "refs/heads/main")
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, pkt("want "+head+"\n")+"0000"+pkt("done\n"))
	zw.Close()
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/proj.git/git-upload-pack", g.port), &zb)
	req.SetBasicAuth(f.tokProj, "")
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("PACK")) {
		t.Fatalf("gzip request: %d %q", resp.StatusCode, body[:min(len(body), 80)])
	}
	// A broken gzip body is the client's error.
	req, _ = http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/proj.git/git-upload-pack", g.port), strings.NewReader("not gzip at all"))
	req.SetBasicAuth(f.tokProj, "")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("broken gzip: %d", resp.StatusCode)
	}
}

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

func TestBodyLimit(t *testing.T) {
	f := newFixture(t)
	g := f.startGate([]string{"--max-body=1000"})
	big := strings.Repeat("0", 5000)
	code, _ := raw(t, g.port, "POST /proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n"+basic(f.tokProj)+"\r\n"+big)
	if code != 413 {
		t.Fatalf("declared oversize body: %d", code)
	}
	// Chunked body over the limit.
	chunk := fmt.Sprintf("%x\r\n%s\r\n", len(big), big)
	code, _ = raw(t, g.port, "POST /proj.git/git-receive-pack HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"+basic(f.tokProj)+"\r\n"+chunk+"0\r\n\r\n")
	if code != 413 {
		t.Fatalf("chunked oversize body: %d", code)
	}
}

func TestHEADFile(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	code, resp := raw(t, g.port, "GET /proj.git/HEAD HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"+basic(f.tokProj)+"\r\n")
	if code != 200 || !strings.HasSuffix(resp, "ref: refs/heads/main\n") {
		t.Fatalf("HEAD: %d %q", code, resp)
	}
}

// childOf returns the first process whose parent is pid and whose cmdline
// contains want.
func childOf(pid int, want string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(cmdline), want) {
			return cpid
		}
	}
	return 0
}

func TestSIGTERMLetsInFlightCloneFinish(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	head := f.git(filepath.Join(f.base, "proj.git"), "rev-parse", "refs/heads/main")
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(g.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Headers and the first chunk: the gate starts git upload-pack and waits
	// for the rest of the negotiation.
	first := pkt("want " + head + "\n")
	fmt.Fprintf(c, "POST /proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n%s\r\n%x\r\n%s\r\n",
		basic(f.tokProj), len(first), first)
	deadline := time.Now().Add(30 * time.Second)
	for childOf(g.cmd.Process.Pid, "upload-pack") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("git upload-pack never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused once the listener is closed.
	deadline = time.Now().Add(30 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(g.port), time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("gate still accepts connections after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rest := "0000" + pkt("done\n")
	fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", len(rest), rest)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200")) || !bytes.Contains(resp, []byte("PACK")) {
		t.Fatalf("in-flight request did not complete: %q", resp[:min(len(resp), 200)])
	}
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("gate exit after SIGTERM: %v", err)
		}
		g.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("gate did not exit after the in-flight request")
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--base-path=/x", "--token-file=/y", "--inetd", "--detach"}, "--inetd and --detach are mutually exclusive"},
		{[]string{"--base-path=/x", "--token-file=/y"}, "One of --inetd or --detach is required"},
		{[]string{"--base-path", "/x", "--token-file", "/y", "--port", "70000", "--detach"}, "out of range"},
		{[]string{"--bogus"}, "flag provided but not defined"},
	} {
		cmd := exec.Command(gateBin, tc.args...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.msg) {
			t.Errorf("%v: err %v, output %q", tc.args, err, out)
		}
	}
}

// git answers as soon as it has read the negotiation; the end of a chunked
// body may arrive later. The response must not be cut off because the body
// is still open (net/http closes unread bodies unless full duplex is on).
func TestResponseWhileBodyStillOpen(t *testing.T) {
	f := newFixture(t)
	g := f.startGate(nil)
	head := f.git(filepath.Join(f.base, "proj.git"), "rev-parse", "refs/heads/main")
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(g.port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := pkt("want "+head+"\n") + "0000" + pkt("done\n")
	fmt.Fprintf(c, "POST /proj.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n%s\r\n%x\r\n%s\r\n",
		basic(f.tokProj), len(req), req)
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !bytes.Contains(got.Bytes(), []byte("PACK")) {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("response before the body ended: %v %q", err, got.String())
		}
	}
	// Only now end the body; the response must still complete.
	io.WriteString(c, "0\r\n\r\n")
	for !bytes.HasSuffix(got.Bytes(), []byte("\r\n0\r\n\r\n")) {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("response cut off: %v (%d bytes)", err, got.Len())
		}
	}
	if !bytes.HasPrefix(got.Bytes(), []byte("HTTP/1.1 200")) {
		t.Fatalf("status: %q", got.String()[:40])
	}
}
