package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCredentialsEncryptionLifecycle drives the real binaries through the
// whole life of an encrypted store: a plaintext credential stored before
// any keystore, unlock (creating the keystore), migrate, the proxy serving
// the sealed credential, lock (the proxy refuses to start), a wrong
// passphrase, unlock and rotate-key.
func TestCredentialsEncryptionLifecycle(t *testing.T) {
	p := newProxyCLI(t)
	// A host without a key source that needs no passphrase: systemd-creds'
	// host key points at a private path that does not exist (never the
	// host's /var/lib/systemd/credential.secret).
	p.env = append(p.env, "SYSTEMD_CREDENTIAL_SECRET="+filepath.Join(t.TempDir(), "absent.secret"))
	const secret = "sk-REAL-encrypted-secret-42"
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte("a long operator passphrase\n"), 0o600)
	wrongFile := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongFile, []byte("not the passphrase at all\n"), 0o600)
	t.Cleanup(func() { p.sandbox("", "credentials", "lock") })

	var mu sync.Mutex
	var gotAuth []string
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotAuth = append(gotAuth, r.Header.Get("X-Api-Key"))
		mu.Unlock()
		io.WriteString(w, "upstream-ok")
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(l)
	defer up.Close()

	code, _, errOut := p.sandbox(secret+"\n", "credentials", "set", "claude")
	if code != 0 || !strings.Contains(errOut, "stored in plaintext") || !strings.Contains(errOut, "credentials unlock") {
		t.Fatalf("set before any keystore: %d %q", code, errOut)
	}
	var st struct {
		Mode        string
		State       string
		Problem     bool
		Next        []string
		Credentials struct{ Sealed, Plaintext int }
	}
	json.Unmarshal([]byte(p.ok("", "credentials", "status", "--json")), &st)
	if st.Mode != "plaintext" || !st.Problem || st.Credentials.Plaintext != 1 {
		t.Fatalf("status before unlock: %+v", st)
	}
	if code, _, errOut := p.sandbox("", "credentials", "unlock"); code != 2 || !strings.Contains(errOut, "--passphrase-file") {
		t.Fatalf("unlock without a terminal: %d %q", code, errOut)
	}
	out := p.ok("", "credentials", "unlock", "--passphrase-file", passFile)
	if !strings.Contains(out, "Created the keystore") || !strings.Contains(out, "1 values are still plaintext") {
		t.Fatalf("first unlock: %q", out)
	}
	if out := p.ok("", "credentials", "migrate"); !strings.HasPrefix(out, "Encrypted 1 credentials and 0 SSH key files") {
		t.Fatalf("migrate: %q", out)
	}
	for _, f := range []string{"credentials.db", "credentials.db-wal"} {
		if b, err := os.ReadFile(filepath.Join(p.cred, f)); err == nil && bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s contains the secret after migrate", f)
		}
	}
	json.Unmarshal([]byte(p.ok("", "credentials", "status", "--json")), &st)
	if st.Mode != "encrypted" || st.Problem || st.Credentials.Sealed != 1 {
		t.Fatalf("status after migrate: %+v", st)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(p.ok("", "credentials", "get", "claude", "--show-secret", "--json")), &shown); err != nil || shown["key"] != secret {
		t.Fatalf("get of the sealed credential: %v %v", shown, err)
	}

	os.WriteFile(filepath.Join(p.cred, "routes.json"), []byte(fmt.Sprintf(`{"claude": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", l.Addr())), 0o600)
	tok := strings.TrimSpace(p.ok("", "proxy", "token", "create", "proj", "task1", "--provider", "claude"))
	request := func(stage string) {
		t.Helper()
		req, _ := http.NewRequest("GET", proxyURLFromConfig(t, p)+"/v1/messages", nil)
		req.Header.Set("X-Api-Key", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if resp.StatusCode != 200 || string(body) != "upstream-ok" || len(gotAuth) == 0 || gotAuth[len(gotAuth)-1] != secret {
			t.Fatalf("%s: through the proxy %d %q, upstream saw %q", stage, resp.StatusCode, body, gotAuth)
		}
	}
	stop := func() {
		t.Helper()
		p.ok("", "proxy", "stop")
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(p.ok("", "proxy", "status"), "Status: stopped") {
			if time.Now().After(deadline) {
				t.Fatal("proxy did not stop")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	p.ok("", "proxy", "start")
	request("encrypted store")
	stop()

	// Locked: the proxy refuses to start and says what to run.
	if out := p.ok("", "credentials", "lock"); !strings.HasPrefix(out, "Locked.") {
		t.Fatalf("lock: %q", out)
	}
	code, out, errOut = p.sandbox("", "proxy", "start")
	if code == 0 || !strings.Contains(out+errOut, "credentials unlock") {
		t.Fatalf("proxy start while locked: %d %q %q", code, out, errOut)
	}
	if strings.Contains(out+errOut, secret) {
		t.Fatal("the refusal shows the secret")
	}
	code, _, errOut = p.sandbox("", "credentials", "get", "claude")
	if code != 1 || !strings.Contains(errOut, "locked") {
		t.Fatalf("get while locked: %d %q", code, errOut)
	}
	code, _, errOut = p.sandbox("", "credentials", "unlock", "--passphrase-file", wrongFile)
	if code != 1 || !strings.Contains(errOut, "wrong passphrase") || strings.Contains(errOut, "not the passphrase") {
		t.Fatalf("wrong passphrase: %d %q", code, errOut)
	}

	// Unlock again, rotate the data key, and serve again.
	p.ok("", "credentials", "unlock", "--passphrase-file", passFile, "--timeout", "1h")
	if out := p.ok("", "credentials", "rotate-key"); !strings.HasPrefix(out, "Re-encrypted 1 credentials") {
		t.Fatalf("rotate-key: %q", out)
	}
	p.ok("", "proxy", "start")
	request("after rotate-key")
	// A passphrase change while the proxy runs: it keeps serving (it takes
	// the new key from the keyring when the keystore changes).
	newPass := filepath.Join(t.TempDir(), "new")
	os.WriteFile(newPass, []byte("the replacement passphrase\n"), 0o600)
	if out := p.ok("", "credentials", "rotate-key", "--new-passphrase-file", newPass); !strings.Contains(out, "Changed the passphrase") {
		t.Fatalf("rotate-key --new-passphrase-file: %q", out)
	}
	p.ok("sk-other-value\n", "credentials", "set", "other") // a write: the proxy's resolver reloads
	request("after the passphrase change")
	stop()
	p.ok("", "credentials", "lock")
	if code, _, _ := p.sandbox("", "credentials", "unlock", "--passphrase-file", passFile); code != 1 {
		t.Fatal("the old passphrase still unlocks")
	}
	p.ok("", "credentials", "unlock", "--passphrase-file", newPass)

	// Logs never hold the secret.
	filepath.WalkDir(filepath.Dir(p.cred), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".log") {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s contains the secret", path)
			}
		}
		return nil
	})
}

// TestCredentialsSystemdCreds: with the key enrolled with systemd-creds
// (host key; a private $SYSTEMD_CREDENTIAL_SECRET, not the host's), the
// proxy starts on a locked store without a passphrase and unlock needs
// none; without a TPM, tpm2 is refused clearly; "off" brings the
// passphrase back.
func TestCredentialsSystemdCreds(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs systemd-creds and root (host key)")
	}
	p := newProxyCLI(t)
	p.env = append(p.env, "SYSTEMD_CREDENTIAL_SECRET="+filepath.Join(t.TempDir(), "credential.secret"))
	t.Cleanup(func() { p.sandbox("", "credentials", "lock") })
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte("systemd creds test passphrase\n"), 0o600)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "sk-systemd-creds-7" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(l)
	defer up.Close()
	os.MkdirAll(p.cred, 0o700)
	os.WriteFile(filepath.Join(p.cred, "routes.json"), []byte(fmt.Sprintf(`{"claude": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", l.Addr())), 0o600)

	p.ok("sk-systemd-creds-7\n", "credentials", "set", "claude")
	if code, _, errOut := p.sandbox("", "credentials", "unlock", "--passphrase-file", passFile, "--systemd-creds", "tpm2"); code != 1 || !strings.Contains(errOut, "TPM2") {
		t.Fatalf("tpm2 without a TPM: %d %q", code, errOut)
	}
	out := p.ok("", "credentials", "unlock", "--passphrase-file", passFile, "--systemd-creds", "host")
	if !strings.Contains(out, "Sealed the key with systemd-creds (host)") {
		t.Fatalf("enroll: %q", out)
	}
	p.ok("", "credentials", "migrate")
	p.ok("", "credentials", "lock")
	if st := p.ok("", "credentials", "status"); !strings.Contains(st, "enrolled (host)") {
		t.Fatalf("status:\n%s", st)
	}
	// Locked, but the proxy opens the key through systemd-creds.
	p.proxyServes(t, "proxy with a systemd-creds store")
	if out := p.ok("", "credentials", "unlock"); !strings.HasPrefix(out, "Unlocked with systemd-creds (host)") {
		t.Fatalf("unlock without a passphrase: %q", out)
	}
	if out := p.ok("", "credentials", "unlock", "--passphrase-file", passFile, "--systemd-creds", "off"); !strings.Contains(out, "Removed the systemd-creds enrollment") {
		t.Fatalf("off: %q", out)
	}
	p.ok("", "credentials", "lock")
	if code, _, errOut := p.sandbox("", "credentials", "unlock"); code != 2 || !strings.Contains(errOut, "--passphrase-file") {
		t.Fatalf("unlock after off wants the passphrase: %d %q", code, errOut)
	}
}

// TestCredentialsOnByDefault: encryption at rest needs no command where a
// key source works without a passphrase. Without one, `credentials set`
// stores plaintext and warns once what to run; once the (private) host key
// exists, the next secret written (here an SSH key) creates the keystore
// sealed by systemd-creds, seals the credential already stored in the same
// step, and the proxy serves it without any unlock.
func TestCredentialsOnByDefault(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs systemd-creds and root (host key)")
	}
	if exec.Command("systemd-creds", "has-tpm2").Run() == nil {
		t.Skip("this host has a TPM2: the source would be tpm2")
	}
	p := newProxyCLI(t)
	hostKey := filepath.Join(t.TempDir(), "credential.secret")
	p.env = append(p.env, "SYSTEMD_CREDENTIAL_SECRET="+hostKey)
	const secret = "sk-on-by-default-SECRET-77"
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != secret {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go up.Serve(l)
	defer up.Close()
	os.MkdirAll(p.cred, 0o700)
	os.WriteFile(filepath.Join(p.cred, "routes.json"), []byte(fmt.Sprintf(`{"claude": {"upstream": "http://%s", "auth_header": "dynamic"}}`+"\n", l.Addr())), 0o600)

	type status struct {
		Mode, Why   string
		Problem     bool
		Next        []string
		Credentials struct{ Sealed, Plaintext int }
		KeyFiles    struct{ Sealed, Plaintext int } `json:"key_files"`
	}
	getStatus := func() status {
		var st status
		if err := json.Unmarshal([]byte(p.ok("", "credentials", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// No source: plaintext, one loud warning naming the command.
	code, _, errOut := p.sandbox(secret+"\n", "credentials", "set", "claude")
	if code != 0 || strings.Count(errOut, "stored in plaintext") != 1 || !strings.Contains(errOut, "credentials unlock") || !strings.Contains(errOut, hostKey) {
		t.Fatalf("set without a source: %d %q", code, errOut)
	}
	if _, err := os.Stat(hostKey); err == nil {
		t.Fatal("the host key was created as a side effect of storing a credential")
	}
	if st := getStatus(); st.Mode != "plaintext" || !st.Problem || !strings.Contains(st.Why, "systemd-creds setup") {
		t.Fatalf("status without a source: %+v", st)
	}

	cmd := exec.Command("systemd-creds", "setup")
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-creds setup: %v: %s", err, out)
	}
	if st := getStatus(); st.Mode != "plaintext" || !strings.Contains(st.Why, "systemd-creds (host)") || !strings.Contains(strings.Join(st.Next, " "), "credentials migrate") {
		t.Fatalf("status with a source, before a write: %+v", st)
	}

	// The next secret written switches the store to encrypted.
	code, out, errOut := p.sandbox("", "ssh", "init", "proj", "--json")
	if code != 0 || !strings.Contains(errOut, "created the keystore") || !strings.Contains(errOut, "systemd-creds (host)") ||
		!strings.Contains(errOut, "Encrypted the 1 credentials and 0 SSH key files already stored") {
		t.Fatalf("ssh init: %d %q", code, errOut)
	}
	var res struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.PrivateKey == "" {
		t.Fatalf("ssh init --json: %v %q", err, out)
	}
	st := getStatus()
	if st.Mode != "encrypted" || st.Problem || st.Credentials.Sealed != 1 || st.Credentials.Plaintext != 0 || st.KeyFiles.Sealed != 1 ||
		!strings.Contains(st.Why, "systemd-creds (host) only") {
		t.Fatalf("status after the first write: %+v", st)
	}
	key, _ := os.ReadFile(res.PrivateKey)
	if !bytes.HasPrefix(key, []byte("terok-enc:v1:")) {
		t.Fatalf("generated key file is not sealed: %.40q", key)
	}
	for _, f := range []string{"credentials.db", "credentials.db-wal"} {
		data, err := os.ReadFile(filepath.Join(p.cred, f))
		if err == nil && bytes.Contains(data, []byte(secret)) {
			t.Fatalf("%s still holds the secret", f)
		}
	}
	// Later writes are sealed, without a message.
	code, _, errOut = p.sandbox("other-SECRET-value\n", "credentials", "set", "other")
	if code != 0 || errOut != "" {
		t.Fatalf("second set: %d %q", code, errOut)
	}
	if st := getStatus(); st.Credentials.Sealed != 2 {
		t.Fatalf("second set not sealed: %+v", st)
	}

	// The proxy opens the store unattended; no unlock was ever run.
	p.proxyServes(t, "proxy on the unattended store")

	// There is no passphrase to unlock with; rotate-key adds a recovery one.
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte("recovery passphrase 1\n"), 0o600)
	if code, _, errOut := p.sandbox("", "credentials", "unlock", "--passphrase-file", passFile); code != 1 || !strings.Contains(errOut, "no passphrase") || !strings.Contains(errOut, "--new-passphrase") {
		t.Fatalf("passphrase unlock of an unattended keystore: %d %q", code, errOut)
	}
	t.Cleanup(func() { p.sandbox("", "credentials", "lock") })
	p.ok("", "credentials", "rotate-key", "--new-passphrase-file", passFile)
	p.ok("", "credentials", "lock")
	if out := p.ok("", "credentials", "unlock", "--passphrase-file", passFile); !strings.Contains(out, "Unlocked") {
		t.Fatalf("unlock with the recovery passphrase: %q", out)
	}
	if st := getStatus(); st.Mode != "encrypted" || strings.Contains(st.Why, "only") {
		t.Fatalf("status with a recovery passphrase: %+v", st)
	}
}

// proxyServes starts the proxy, checks that a new phantom token of
// proj/task1 for claude gets the upstream's 200 through it (what names the
// case in the failure), and stops it again.
func (p *proxyCLI) proxyServes(t *testing.T, what string) {
	t.Helper()
	p.ok("", "proxy", "start")
	tok := strings.TrimSpace(p.ok("", "proxy", "token", "create", "proj", "task1", "--provider", "claude"))
	req, _ := http.NewRequest("GET", proxyURLFromConfig(t, p)+"/v1/messages", nil)
	req.Header.Set("X-Api-Key", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d", what, resp.StatusCode)
	}
	p.ok("", "proxy", "stop")
}
