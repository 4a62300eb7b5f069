package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/version"
)

// curlHealth asks the real gate for /-/health with curl; it returns the
// status code and the body.
func curlHealth(t *testing.T, port int, extra ...string) (int, string) {
	t.Helper()
	args := append([]string{"-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"}, extra...)
	args = append(args, "http://127.0.0.1:"+strconv.Itoa(port)+"/-/health")
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	code, _ := strconv.Atoi(s[i+1:])
	return code, s[:i]
}

func TestHealth(t *testing.T) {
	f := newFixture(t)
	logFile := filepath.Join(f.dir, "gate.log")
	g := f.startGate([]string{"--log-file=" + logFile}, "TEROK_GATE_ADMIN_TOKEN="+adminTok)
	code, body := curlHealth(t, g.port)
	var a struct{ Status, Version, Error string }
	if err := json.Unmarshal([]byte(body), &a); err != nil || code != 200 || a.Status != "ok" || a.Version != version.Version {
		t.Fatalf("healthy gate: %d %q (%v)", code, body, err)
	}
	// No token needed, and HEAD answers too.
	if code, _ := curlHealth(t, g.port, "-I"); code != 200 {
		t.Fatalf("HEAD: %d", code)
	}
	if code, _ := curlHealth(t, g.port, "-X", "POST"); code != 405 {
		t.Fatalf("POST: %d, want 405", code)
	}
	// Only the exact raw path: an encoded variant is no health answer.
	if c, _ := raw(t, g.port, "GET /%2d/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); c == 200 {
		t.Fatal("an encoded health path answered 200")
	}

	// A tokens file the gate cannot read: 503, naming what, never where.
	if err := os.Remove(f.tokfile); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.tokfile, f.tokfile); err != nil { // ELOOP, also for root
		t.Fatal(err)
	}
	code, body = curlHealth(t, g.port)
	if code != 503 || !strings.Contains(body, `"error":"tokens-file"`) || strings.Contains(body, f.dir) {
		t.Fatalf("unreadable tokens: %d %q", code, body)
	}
	if err := os.Remove(f.tokfile); err != nil {
		t.Fatal(err)
	}
	// No tokens file yet is healthy (no task has a token).
	if code, _ := curlHealth(t, g.port); code != 200 {
		t.Fatalf("missing tokens file: %d", code)
	}
	if err := os.Rename(f.base, filepath.Join(f.dir, "gone")); err != nil {
		t.Fatal(err)
	}
	code, body = curlHealth(t, g.port)
	if code != 503 || !strings.Contains(body, `"error":"base-path"`) {
		t.Fatalf("missing base path: %d %q", code, body)
	}
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "health check failed") {
		t.Fatalf("the cause is not logged: %s", log)
	}
}
