package server

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/gate/internal/pktline"
	"terok.dev/sandbox/gate/internal/tokens"
)

func pkt(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }

// fetchBody is the request `git clone` sends for one want (protocol v2).
func fetchBody(want string, extra ...string) string {
	b := pkt("command=fetch") + pkt("agent=git/2.39.5\n") + pkt("object-format=sha1") + "0001" +
		pkt("thin-pack\n") + pkt("no-progress\n") + pkt("ofs-delta\n")
	for _, w := range strings.Fields(want) {
		b += pkt("want " + w + "\n")
	}
	for _, e := range extra {
		b += pkt(e + "\n")
	}
	return b + pkt("done\n") + "0000"
}

func TestFetchCacheable(t *testing.T) {
	id := strings.Repeat("ab", 20)
	for _, c := range []struct {
		name string
		body string
		want bool
	}{
		{"clone", fetchBody(id), true},
		{"two wants", fetchBody(id + " " + strings.Repeat("cd", 20)), true},
		{"sha256 want", fetchBody(strings.Repeat("ef", 32)), true},
		{"shallow clone", fetchBody(id, "deepen 1"), true},
		{"partial clone", fetchBody(id, "filter blob:none"), true},
		{"include-tag", fetchBody(id, "include-tag"), true},
		{"upper-case length", strings.Replace(fetchBody(id), "000c", "000C", 1), true},
		{"have", fetchBody(id, "have "+id), false},
		{"client is shallow", fetchBody(id, "shallow "+id), false},
		{"unknown argument", fetchBody(id, "sideband-all"), false},
		{"want-ref", fetchBody(id, "want-ref refs/heads/main"), false},
		{"unknown capability", strings.Replace(fetchBody(id), pkt("object-format=sha1"), pkt("session-id=x"), 1), false},
		{"not done", strings.Replace(fetchBody(id), pkt("done\n"), "", 1), false},
		{"ls-refs", pkt("command=ls-refs\n") + "0001" + pkt("peel\n") + "0000", false},
		{"bad want", fetchBody("xyz"), false},
		{"short want", fetchBody(id[:39]), false},
		{"no flush", strings.TrimSuffix(fetchBody(id), "0000"), false},
		{"data after flush", fetchBody(id) + pkt("done\n"), false},
		{"two flushes", fetchBody(id) + "0000", false},
		{"no delim", strings.Replace(fetchBody(id), "0001", "", 1), false},
		{"response-end", strings.Replace(fetchBody(id), "0000", "0002", 1), false},
		{"bad hex", "zz" + fetchBody(id)[2:], false},
		{"length past end", fetchBody(id)[:len(fetchBody(id))-4] + "00ff", false},
		{"length 3", pkt("command=fetch") + "0003", false},
		{"empty", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := fetchCacheable([]byte(c.body)); got != c.want {
				t.Fatalf("fetchCacheable(%q) = %v, want %v", c.body, got, c.want)
			}
		})
	}
}

// FuzzFetchCacheable: the parser never panics, and what it accepts is a
// complete request that names no object of the client's.
func FuzzFetchCacheable(f *testing.F) {
	id := strings.Repeat("ab", 20)
	f.Add([]byte(fetchBody(id)))
	f.Add([]byte(fetchBody(id, "have "+id)))
	f.Add([]byte(fetchBody(id, "deepen 1", "filter blob:none")))
	f.Add([]byte(pkt("command=ls-refs\n") + "0000"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !fetchCacheable(body) {
			return
		}
		if !bytes.HasSuffix(body, []byte("0000")) || !bytes.HasPrefix(body, []byte(pkt("command=fetch"))) &&
			!bytes.HasPrefix(body, []byte(pkt("command=fetch\n"))) {
			t.Fatalf("accepted %q", body)
		}
		for rest := body; len(rest) >= 4; {
			n, _ := pktline.Len(rest[:4])
			if n < 4 {
				rest = rest[4:]
				continue
			}
			line := string(rest[4:n])
			if strings.HasPrefix(line, "have") || strings.HasPrefix(line, "shallow") {
				t.Fatalf("accepted %q with %q", body, line)
			}
			rest = rest[n:]
		}
	})
}

func TestCacheBudget(t *testing.T) {
	var c advertCache
	big := make([]byte, packEntryMax)
	now := time.Now()
	for i := 0; i < packCacheMax/packEntryMax+3; i++ {
		c.put(advertKey{repo: fmt.Sprint(i)}, advertEntry{body: big, at: now.Add(time.Duration(i) * time.Millisecond)}, true)
		if c.packBytes > packCacheMax {
			t.Fatalf("after %d entries the cache holds %d bytes", i+1, c.packBytes)
		}
	}
	// The oldest went first.
	if _, ok := c.get(advertKey{repo: "0"}); ok {
		t.Fatal("oldest response still cached")
	}
	last := fmt.Sprint(packCacheMax/packEntryMax + 2)
	if _, ok := c.get(advertKey{repo: last}); !ok {
		t.Fatal("newest response not cached")
	}
	// Replacing an entry does not count it twice; small answers do not count.
	c.put(advertKey{repo: last}, advertEntry{body: big, at: now}, true)
	c.put(advertKey{repo: "advert"}, advertEntry{body: big, at: now}, false)
	if c.packBytes != packCacheMax {
		t.Fatalf("cache holds %d bytes, want %d", c.packBytes, packCacheMax)
	}
	// Expired entries are not served.
	c.put(advertKey{repo: "old"}, advertEntry{body: []byte("x"), at: now.Add(-2 * advertTTL)}, false)
	if _, ok := c.get(advertKey{repo: "old"}); ok {
		t.Fatal("expired entry served")
	}
}

// cacheRig is a gate handler over one repository with a git wrapper that
// logs every git run.
type cacheRig struct {
	t              *testing.T
	dir, repo, tok string
	log            string
	env            []string
	srv            *httptest.Server
	h              *Handler
	realGit        string
}

func newCacheRig(t *testing.T, wrapperTail string) *cacheRig {
	t.Helper()
	dir := t.TempDir()
	r := &cacheRig{t: t, dir: dir, repo: filepath.Join(dir, "gate", "p.git"), log: filepath.Join(dir, "git.log")}
	r.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t",
		"GIT_AUTHOR_EMAIL=t@x.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x.invalid", "GIT_TERMINAL_PROMPT=0"}
	src := filepath.Join(dir, "src")
	r.git("init", "-q", "-b", "main", src)
	for i := 0; i < 3; i++ {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 100)), 0o644)
		r.git("-C", src, "add", ".")
		r.git("-C", src, "commit", "-q", "-m", fmt.Sprint("c", i))
	}
	r.git("-C", src, "tag", "-a", "-m", "v1", "v1")
	r.git("clone", "-q", "--mirror", src, r.repo)
	// One thread: pack-objects output is then byte-for-byte reproducible,
	// so the gate's answers can be compared with a direct git run.
	r.git("-C", r.repo, "config", "pack.threads", "1")
	tokfile := filepath.Join(dir, "gate", "tokens.json")
	tok, err := gatetokens.Open(tokfile, tokfile+".lock", nil).Create(names.TaskRef{Project: "p", Task: "1"})
	if err != nil {
		t.Fatal(err)
	}
	r.tok = tok
	r.realGit, _ = exec.LookPath("git")
	wrapper := filepath.Join(dir, "git-wrapper")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$*\" >> "+r.log+"\n"+wrapperTail+"\nexec "+r.realGit+" \"$@\"\n"), 0o755)
	getenv := func(k string) string {
		switch k {
		case "PATH":
			return os.Getenv("PATH")
		case "HOME":
			return dir
		}
		return ""
	}
	r.h, err = New(Options{BasePath: filepath.Join(dir, "gate"), Store: tokens.New(tokfile, "", nil), GitPath: wrapper, Getenv: getenv})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(r.h)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *cacheRig) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// runs counts the logged git runs that contain s, and clears the log.
func (r *cacheRig) runs(s string) int {
	data, _ := os.ReadFile(r.log)
	os.Remove(r.log)
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if l != "" && strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// do sends one request as git would and returns status and body.
func (r *cacheRig) do(method, path, body string) (int, []byte, http.Header) {
	r.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, r.srv.URL+"/p.git"+path, rd)
	req.SetBasicAuth(r.tok, "")
	req.Header.Set("Git-Protocol", "version=2")
	if body != "" {
		req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, out, resp.Header
}

// demux undoes the side-band framing of a fetch response: how upload-pack
// cuts the pack into packets depends on pipe timing, the pack does not. It
// returns the sections before the pack, then the pack and progress streams.
func demux(t *testing.T, resp []byte) string {
	t.Helper()
	var head, pack, progress strings.Builder
	inPack := false
	for len(resp) > 0 {
		n, ok := pktline.Len(resp[:4])
		if !ok || n > len(resp) {
			t.Fatalf("bad pkt-line in %q", resp)
		}
		if n < 4 {
			head.Write(resp[:4])
			resp = resp[4:]
			continue
		}
		line := resp[4:n]
		resp = resp[n:]
		switch {
		case !inPack:
			head.Write(line)
			inPack = string(line) == "packfile\n"
		case line[0] == 1:
			pack.Write(line[1:])
		case line[0] == 2:
			progress.Write(line[1:])
		default:
			t.Fatalf("side-band %d in %q", line[0], line)
		}
	}
	return head.String() + "\n--pack--\n" + pack.String() + "\n--progress--\n" + progress.String()
}

// noSID blanks the session id, which is different in every git run.
func noSID(b []byte) []byte {
	return regexp.MustCompile(`session-id=[^\n]*`).ReplaceAll(b, []byte("session-id=X"))
}

// direct is git's own answer, run with the environment the gate gives it.
func (r *cacheRig) direct(body string, args ...string) []byte {
	r.t.Helper()
	cmd := exec.Command(r.realGit, append(append([]string{"upload-pack", "--stateless-rpc"}, args...), r.repo)...)
	cmd.Env = append(append([]string(nil), r.h.baseEnv...), "GIT_PROTOCOL=version=2")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.Output()
	if err != nil {
		r.t.Fatalf("git upload-pack: %v", err)
	}
	return out
}

// TestCachedAnswersEqualGit compares every cached answer with what git
// produces for the same request (byte for byte; fetch answers after undoing
// the side-band framing, which depends on pipe timing even in git), before and after changes to
// the configuration and the refs, and counts the git runs behind them.
func TestCachedAnswersEqualGit(t *testing.T) {
	r := newCacheRig(t, "")
	head := r.git("-C", r.repo, "rev-parse", "HEAD")
	lsRefs := pkt("command=ls-refs\n") + pkt("object-format=sha1\n") + "0001" + pkt("peel\n") + pkt("symrefs\n") +
		pkt("ref-prefix HEAD\n") + pkt("ref-prefix refs/heads/\n") + pkt("ref-prefix refs/tags/\n") + "0000"
	round := func(name string, wantRuns int) {
		t.Helper()
		r.runs("") // clear
		for i := 0; i < 2; i++ {
			code, adv, _ := r.do("GET", "/info/refs?service=git-upload-pack", "")
			if code != 200 {
				t.Fatalf("%s: advertisement %d", name, code)
			}
			if want := r.direct("", "--advertise-refs"); !bytes.Equal(noSID(adv), noSID(want)) {
				t.Fatalf("%s: advertisement\n%q\ngit says\n%q", name, adv, want)
			}
			code, refs, _ := r.do("POST", "/git-upload-pack", lsRefs)
			if code != 200 {
				t.Fatalf("%s: ls-refs %d", name, code)
			}
			if want := r.direct(lsRefs); !bytes.Equal(refs, want) {
				t.Fatalf("%s: ls-refs\n%q\ngit says\n%q", name, refs, want)
			}
			for _, body := range []string{fetchBody(head), fetchBody(head, "include-tag"), fetchBody(head, "deepen 1"), fetchBody(head, "filter blob:none")} {
				code, pack, _ := r.do("POST", "/git-upload-pack", body)
				if code != 200 {
					t.Fatalf("%s: fetch %d", name, code)
				}
				if got, want := demux(t, pack), demux(t, r.direct(body)); got != want {
					t.Fatalf("%s: fetch %q:\n%.300q\ngit says\n%.300q", name, body, got, want)
				}
			}
		}
		if n := r.runs("upload-pack"); n != wantRuns {
			t.Fatalf("%s: %d git runs for two rounds of 6 requests, want %d", name, n, wantRuns)
		}
	}
	round("first", 6)
	round("cached", 0)
	// A configuration change that changes the advertisement (and ls-refs:
	// both must be rerun; the fetch answers too, as their key holds the config).
	r.git("-C", r.repo, "config", "uploadpack.allowRefInWant", "true")
	round("after config change", 6)
	// An advertisement with a session id (per process) is never cached.
	r.git("-C", r.repo, "config", "transfer.advertiseSID", "true")
	round("after second config change", 7)
	round("session ids", 2)
	r.git("-C", r.repo, "config", "--unset", "transfer.advertiseSID")
	round("after unset", 6)
	// A ref moving changes ls-refs and the fetch answers; the
	// advertisement stays cached.
	src := filepath.Join(r.dir, "src")
	r.git("-C", src, "commit", "-q", "--allow-empty", "-m", "more")
	r.git("-C", r.repo, "fetch", "-q", src, "+refs/heads/main:refs/heads/main")
	round("after ref update", 5)
	// A new tag (include-tag answers change) through pack-refs.
	r.git("-C", r.repo, "tag", "-a", "-m", "v2", "v2", head)
	r.git("-C", r.repo, "pack-refs", "--all")
	round("after tag and pack-refs", 5)
	round("cached again", 0)
}

// TestFetchCacheLimits: requests that name client objects, answers of a git
// that failed and answers over packEntryMax always run git.
func TestFetchCacheLimits(t *testing.T) {
	t.Run("have", func(t *testing.T) {
		r := newCacheRig(t, "")
		head := r.git("-C", r.repo, "rev-parse", "HEAD")
		first := r.git("-C", r.repo, "rev-list", "--max-parents=0", "HEAD")
		body := fetchBody(head, "have "+first)
		r.runs("")
		for i := 0; i < 2; i++ {
			if code, out, _ := r.do("POST", "/git-upload-pack", body); code != 200 || demux(t, out) != demux(t, r.direct(body)) {
				t.Fatalf("fetch with have: %d", code)
			}
		}
		if n := r.runs("upload-pack"); n != 2 {
			t.Fatalf("%d git runs for two fetches with have, want 2", n)
		}
	})
	t.Run("git fails", func(t *testing.T) {
		// The wrapper runs git and then reports failure for fetches.
		r := newCacheRig(t, `case "$*" in *advertise*) ;; upload-pack*) "`+"$(command -v git)"+`" "$@"; exit 1;; esac`)
		head := r.git("-C", r.repo, "rev-parse", "HEAD")
		r.runs("")
		for i := 0; i < 2; i++ {
			r.do("POST", "/git-upload-pack", fetchBody(head))
		}
		if n := r.runs("upload-pack"); n != 2 {
			t.Fatalf("%d git runs for two fetches of a failing git, want 2", n)
		}
	})
	t.Run("large", func(t *testing.T) {
		r := newCacheRig(t, "")
		src := filepath.Join(r.dir, "src")
		noise := make([]byte, packEntryMax+packEntryMax/2)
		rand.Read(noise)
		os.WriteFile(filepath.Join(src, "noise"), noise, 0o644)
		r.git("-C", src, "add", ".")
		r.git("-C", src, "commit", "-q", "-m", "noise")
		r.git("-C", r.repo, "fetch", "-q", src, "+refs/heads/main:refs/heads/main")
		head := r.git("-C", r.repo, "rev-parse", "HEAD")
		r.runs("")
		for i := 0; i < 2; i++ {
			if code, out, _ := r.do("POST", "/git-upload-pack", fetchBody(head)); code != 200 || len(out) <= packEntryMax {
				t.Fatalf("large fetch: %d, %d bytes", code, len(out))
			}
		}
		if n := r.runs("upload-pack"); n != 2 {
			t.Fatalf("%d git runs for two large fetches, want 2", n)
		}
		if r.h.adverts.packBytes != 0 {
			t.Fatalf("cache holds %d bytes of fetch answers", r.h.adverts.packBytes)
		}
	})
}
