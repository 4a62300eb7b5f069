package integration

// The real proxy binary over an encrypted store (docs/secrets-at-rest.md):
// sealed credentials are opened in memory and injected, a legacy plaintext
// row still works, an OAuth refresh writes the new tokens sealed, a value
// moved to another row is refused, and a locked store stops the proxy from
// starting with the command to run.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/testkit"
)

var testKDF = secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// encrypt creates a keystore beside the env's database; with cache its KEK
// goes to the kernel keyring (dropped when the test ends). It returns a
// database handle that seals.
func (e *env) encrypt(cache bool) *creddb.DB {
	e.t.Helper()
	dir := filepath.Dir(e.dbPath)
	id, kek, err := secretstore.Create(dir, []byte("proxy test passphrase"), testKDF)
	if err != nil {
		e.t.Fatal(err)
	}
	if cache {
		if err := secretstore.CacheKEK(id, kek, 0); err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { _, _ = secretstore.ForgetKEK(id) })
	}
	db, err := creddb.Open(e.dbPath)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { db.Close() })
	db.SetVault(secretstore.OpenVaultWithKEK(dir, kek))
	return db
}

func (e *env) rawData(set, provider string) string {
	e.t.Helper()
	var data string
	if err := e.db.QueryRow(`SELECT data FROM credentials WHERE credential_set = ? AND provider = ?`, set, provider).Scan(&data); err != nil {
		e.t.Fatal(err)
	}
	return data
}

func TestEncryptedStoreEndToEnd(t *testing.T) {
	up := newUpstream(t)
	tokenSrv := newUpstream(t)
	tokenSrv.handler = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token": "AT-SEALED-NEW-5", "refresh_token": "RT-SEALED-NEW-5", "expires_in": 7200}`)
	}
	e := newEnv(t, routesJSON(
		"claude", fmt.Sprintf(`{"upstream": %q, "auth_header": "dynamic"}`, up.origin()),
		"legacy", fmt.Sprintf(`{"upstream": %q, "auth_header": "dynamic"}`, up.origin()),
		"gh", fmt.Sprintf(`{"upstream": %q, "oauth_refresh": {"token_url": %q, "client_id": "cid"}}`, up.origin(), tokenSrv.origin()+"/token"),
		"moved", fmt.Sprintf(`{"upstream": %q, "auth_header": "dynamic"}`, up.origin())))
	e.secret("AT-SEALED-NEW-5")
	e.secret("RT-SEALED-NEW-5")
	db := e.encrypt(true)
	ctx := context.Background()
	if err := db.StoreCredential(ctx, creddb.CredentialKey{Set: "default", Provider: "claude"}, creddb.Credential{"type": "api_key", "key": e.secret("sk-sealed-claude-5")}); err != nil {
		t.Fatal(err)
	}
	if err := db.StoreCredential(ctx, creddb.CredentialKey{Set: "default", Provider: "gh"}, creddb.Credential{"type": "oauth", "access_token": e.secret("AT-SEALED-OLD-5"),
		"refresh_token": e.secret("RT-SEALED-OLD-5"), "expires_at": 1}); err != nil {
		t.Fatal(err)
	}
	// Written by an older tool: plaintext JSON, still served.
	e.cred("default", "legacy", `{"type": "api_key", "key": "`+e.secret("sk-legacy-plain-5")+`"}`)
	// The claude row's sealed value copied into another row.
	e.cred("default", "moved", e.rawData("default", "claude"))
	for _, p := range []string{"claude", "gh"} {
		if v := e.rawData("default", p); !strings.HasPrefix(v, secretstore.Prefix) {
			t.Fatalf("%s not sealed: %.20q", p, v)
		}
	}
	tkC := e.token(tok(501), "default", "claude")
	tkL := e.token(tok(502), "default", "legacy")
	tkG := e.token(tok(503), "default", "gh")
	tkM := e.token(tok(504), "default", "moved")
	e.start()

	for _, c := range []struct{ tok, header, want string }{
		{tkC, "X-Api-Key", "sk-sealed-claude-5"},
		{tkL, "X-Api-Key", "sk-legacy-plain-5"},
	} {
		if code, _, body := e.get("/v1/messages", "X-Api-Key", c.tok); code != 200 {
			t.Fatalf("request: %d %q\n%s", code, body, e.log())
		}
		if got := up.last(t).Header.Get(c.header); got != c.want {
			t.Fatalf("upstream got %q, want the stored secret", got)
		}
	}
	if code, _, _ := e.get("/v1/messages", "X-Api-Key", tkM); code != 500 {
		t.Fatalf("moved sealed value: %d, want 500 (an internal error, logged)", code)
	}
	if !strings.Contains(e.log(), "moved here from another row or file") {
		t.Errorf("the log does not say why the moved value was refused:\n%s", e.log())
	}

	// The refresh stores the new tokens sealed.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.log(), "Refreshed OAuth token for gh") {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh:\n%s", e.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(e.log(), "Skipping credential that cannot be decrypted") || !strings.Contains(e.log(), "provider=moved") {
		t.Errorf("the refresh pass does not say why it skipped the moved value:\n%s", e.log())
	}
	if v := e.rawData("default", "gh"); !strings.HasPrefix(v, secretstore.Prefix) || strings.Contains(v, "AT-SEALED-NEW-5") {
		t.Fatalf("refresh wrote plaintext: %.30q", v)
	}
	if code, _, _ := e.get("/v1/messages", "Authorization", "Bearer "+tkG); code != 200 {
		t.Fatal("request after refresh failed")
	}
	if got := up.last(t).Header.Get("Authorization"); got != "Bearer AT-SEALED-NEW-5" {
		t.Fatalf("upstream got %q after refresh", got)
	}
	e.stop() // also checks no secret in the log, stderr or responses
}

func TestLockedStoreRefusesToStart(t *testing.T) {
	e := newEnv(t, routesJSON("claude", `{"upstream": "http://127.0.0.1:1", "auth_header": "dynamic"}`))
	db := e.encrypt(false) // keystore, but no cached key: locked
	if err := db.StoreCredential(context.Background(), creddb.CredentialKey{Set: "default", Provider: "claude"}, creddb.Credential{"type": "api_key", "key": e.secret("sk-locked-6")}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, "--socket-path="+e.sock, "--db-path="+e.dbPath, "--routes-file="+e.routes,
		fmt.Sprintf("--port=%d", testkit.FreePort(t)), "--log-file="+e.logFile)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("proxy started with a locked store:\n%s", out)
	}
	if !strings.Contains(string(out), "locked: run 'terok-sandbox credentials unlock'") ||
		!strings.Contains(e.log(), "credentials unlock") {
		t.Fatalf("refusal does not say what to run:\n%s\nlog:\n%s", out, e.log())
	}
	e.checkNoSecrets()
}

// TestRotationUnderLoad: data-key rotations (as `credentials rotate-key`
// does them: new key, every row re-sealed in one transaction, old key
// dropped) while 8 keep-alive clients send requests: every request gets
// the credential, none fails while the keystore and the rows change under
// the running proxy.
func TestRotationUnderLoad(t *testing.T) {
	up := newUpstream(t)
	e := newEnv(t, routesJSON("claude", fmt.Sprintf(`{"upstream": %q, "auth_header": "dynamic"}`, up.origin())))
	db := e.encrypt(true)
	ctx := context.Background()
	if err := db.StoreCredential(ctx, creddb.CredentialKey{Set: "default", Provider: "claude"}, creddb.Credential{"type": "api_key", "key": e.secret("sk-rotating-8")}); err != nil {
		t.Fatal(err)
	}
	tk := e.token(tok(801), "default", "claude")
	e.start()

	stop := make(chan struct{})
	errs := make(chan string, 64)
	var wg sync.WaitGroup
	var n atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", e.url("/v1/messages"), nil)
				req.Header.Set("X-Api-Key", tk)
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Sprintf("status %d", resp.StatusCode)
					return
				}
				n.Add(1)
			}
		}()
	}
	// Each rotation, and the stop, waits for a few more requests to have
	// been answered (a fixed 150 ms let a loaded run answer fewer than the
	// ten the end asks for); the deadline is a liveness bound only.
	more := func() {
		t.Helper()
		want := n.Load() + 4
		for deadline := time.Now().Add(30 * time.Second); n.Load() < want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) || len(errs) > 0 {
				close(stop)
				wg.Wait()
				close(errs)
				for msg := range errs {
					t.Errorf("request during rotation: %s", msg)
				}
				t.Fatalf("only %d requests answered\n%s", n.Load(), e.log())
			}
		}
	}
	dir := filepath.Dir(e.dbPath)
	for i := 0; i < 3; i++ {
		more()
		b, err := secretstore.OpenVault(dir).Exclusive()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.StartRotation(); err != nil {
			t.Fatal(err)
		}
		if _, err := db.RewriteAll(ctx, func(key creddb.CredentialKey, v []byte) ([]byte, bool, error) {
			return b.Reseal(v, secretstore.CredentialAD(key))
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.FinishRotation(); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	more()
	close(stop)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Errorf("request during rotation: %s\n%s", msg, e.log())
	}
	if n.Load() < 10 {
		t.Fatalf("only %d requests ran", n.Load())
	}
	if got := up.last(t).Header.Get("X-Api-Key"); got != "sk-rotating-8" {
		t.Fatalf("upstream got %q", got)
	}
	t.Logf("%d requests across 3 rotations", n.Load())
}
