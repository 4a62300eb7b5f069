package integration

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// proxy token create --max-requests/--max-response-bytes stores a quota;
// the real proxy (proxy start) enforces it against real curl; after proxy
// stop, proxy token show prints the usage against the limits, the
// binding state of a bound token, and a malformed row as unreadable.
// Malformed values are usage errors (exit 2) with an example and create
// nothing.
func TestProxyTokenQuotaCommands(t *testing.T) {
	p := newProxyCLI(t)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("q", 1000))
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(l)
	defer up.Close()
	p.ok("sk-REAL-quota-cli-1\n", "credentials", "set", "claude")
	os.WriteFile(filepath.Join(p.cred, "routes.json"), []byte(fmt.Sprintf(`{"claude": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", l.Addr())), 0o600)

	out := p.ok("", "proxy", "token", "create", "proj", "t1", "--provider", "claude", "--max-requests", "3", "--max-response-bytes", "1KiB", "--json")
	var created struct {
		Token string         `json:"token"`
		Quota map[string]any `json:"quota"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Quota["max_requests"] != float64(3) || created.Quota["max_response_bytes"] != float64(1024) {
		t.Fatalf("create --json: %q %v", out, err)
	}
	tok := created.Token
	show := p.ok("", "proxy", "token", "show", tok[:14])
	for _, want := range []string{"Requests:        0 of 3\n", "Response bytes:  0 B of 1024 (1.0 KiB)\n", "Bound to:        no container"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}

	p.ok("", "proxy", "start")
	proxyURL := proxyURLFromConfig(t, p)
	var codes []string
	for i := 0; i < 4; i++ {
		out, err := exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Api-Key: "+tok, proxyURL+"/v1/messages").CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v %s", err, out)
		}
		codes = append(codes, string(out))
	}
	// 1000 bytes, 2000 (crossed 1024: completes), then the byte limit.
	if strings.Join(codes, " ") != "200 200 429 429" {
		t.Errorf("statuses %v, want 200 200 429 429", codes)
	}
	// The proxy writes usage about once a second and when it stops
	// (stop does not wait for the exit).
	p.ok("", "proxy", "stop")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		show = p.ok("", "proxy", "token", "show", tok)
		if strings.Contains(show, "Requests:        2 of 3") || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{"Requests:        2 of 3\n", "Response bytes:  2000 (2.0 KiB) of 1024 (1.0 KiB) (used up: the proxy answers 429)\n", "Usage as of:"} {
		if !strings.Contains(show, want) {
			t.Errorf("show after use lacks %q:\n%s", want, show)
		}
	}
	var shown struct {
		Token string         `json:"token"`
		Quota map[string]any `json:"quota"`
	}
	if err := json.Unmarshal([]byte(p.ok("", "proxy", "token", "show", tok, "--json")), &shown); err != nil ||
		shown.Token != tok[:12]+"…" || shown.Quota["used_requests"] != float64(2) || shown.Quota["used_response_bytes"] != float64(2000) {
		t.Errorf("show --json: %+v %v", shown, err)
	}

	bound := strings.TrimSpace(p.ok("", "proxy", "token", "create", "proj", "t2", "--provider", "claude", "--container", "proj-t2"))
	show = p.ok("", "proxy", "token", "show", bound)
	for _, want := range []string{"Bound to:        proj-t2 (since ", "Binding:         start lease until ", "Quota:           none"} {
		if !strings.Contains(show, want) {
			t.Errorf("show of a bound token lacks %q:\n%s", want, show)
		}
	}
	var b struct {
		Binding map[string]any `json:"binding"`
	}
	if err := json.Unmarshal([]byte(p.ok("", "proxy", "token", "show", bound, "--json")), &b); err != nil || b.Binding["state"] != "lease" || b.Binding["lease_until"] == nil {
		t.Errorf("show --json binding: %+v %v", b, err)
	}

	db, err := sql.Open("sqlite3", filepath.Join(p.cred, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE token_quota SET max_requests = 0 WHERE token = ?`, tok); err != nil {
		t.Fatal(err)
	}
	if show := p.ok("", "proxy", "token", "show", tok); !strings.Contains(show, "Quota:           unreadable, the proxy refuses the token") {
		t.Errorf("show of a malformed row:\n%s", show)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-requests", "0"}, "--max-requests: \"0\": must be at least 1"},
		{[]string{"--max-requests", "-5"}, "--max-requests: \"-5\": not a positive whole number"},
		{[]string{"--max-requests", "9223372036854775808"}, "too large"},
		{[]string{"--max-requests", "1k"}, "not a positive whole number"},
		{[]string{"--max-response-bytes", "10XB"}, `--max-response-bytes: "10XB": unknown unit "XB"`},
		{[]string{"--max-response-bytes", "0"}, "must be at least 1"},
		{[]string{"--max-response-bytes", "-1MB"}, "not a positive whole number"},
		{[]string{"--max-response-bytes", "9300000TB"}, "too large"},
		{[]string{"--max-response-bytes", "1.5GB"}, "unknown unit"},
		{[]string{"--max-requests", "5", "--provider", "ssh"}, "the SSH agent does not enforce quotas"},
	} {
		args := append([]string{"proxy", "token", "create", "proj", "t3", "--provider", "claude"}, c.args...)
		code, out, errOut := p.sandbox("", args...)
		if code != 2 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "e.g. --max-") || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 with %q and an example", c.args, code, out, errOut, c.want)
		}
	}
	if list := p.ok("", "proxy", "token", "list"); strings.Contains(list, "t3") {
		t.Errorf("a refused create left a token:\n%s", list)
	}
}
