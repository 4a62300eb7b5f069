package doctor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/runner/internal/secretsctl"
)

func TestSecretsVerdict(t *testing.T) {
	tests := []struct {
		name string
		st   secretsctl.Status
		sev  Severity
		want []string
	}{
		{"encrypted and unlocked", secretsctl.Status{Mode: "encrypted", Why: "a keystore exists", State: "encrypted, unlocked",
			Credentials: secretsctl.Counts{Sealed: 3}}, OK, []string{"encrypted", "credentials 3 sealed/0 plaintext"}},
		{"plaintext by config", secretsctl.Status{Mode: "plaintext", Why: "credentials_encryption = false in the config", State: "plaintext (no keystore)"},
			OK, []string{"credentials_encryption = false"}},
		{"locked", secretsctl.Status{Mode: "encrypted", State: "encrypted, locked", Problem: true,
			Next: []string{"terok-sandbox credentials unlock   # the daemons refuse to start while locked"}},
			Warn, []string{"run: terok-sandbox credentials unlock"}},
		{"not set up", secretsctl.Status{Mode: "plaintext", Problem: true,
			Next: []string{"terok-sandbox credentials unlock   # x", "terok-sandbox credentials migrate  # y"}},
			Warn, []string{"credentials unlock, then terok-sandbox credentials migrate"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := secretsVerdict(tc.st)
			if v.Severity != tc.sev {
				t.Fatalf("severity %s, want %s (%s)", v.Severity, tc.sev, v.Detail)
			}
			for _, w := range tc.want {
				if !strings.Contains(v.Detail, w) {
					t.Errorf("detail %q lacks %q", v.Detail, w)
				}
			}
			if strings.Contains(v.Detail, "#") {
				t.Errorf("detail keeps a comment: %q", v.Detail)
			}
		})
	}
}

func TestSecretsCheckOnAStore(t *testing.T) {
	dir := t.TempDir()
	c := secretsCheck(secretsctl.Store{Dir: dir, DBPath: dir + "/credentials.db", KeysJSON: dir + "/ssh-keys.json", Encrypt: true}, "")
	if !c.HostSide || c.Category != "secrets" {
		t.Fatalf("check %+v", c)
	}
	v := c.Evaluate(ProbeOutput{})
	if v.Severity != OK || !strings.Contains(v.Detail, "plaintext") {
		t.Fatalf("empty store: %+v", v)
	}
}

func TestKeyctlAllowed(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	allows := write("allows.json", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "keyctl"], "action": "SCMP_ACT_ALLOW"}]}`)
	refuses := write("refuses.json", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}`)
	if why := keyctlAllowed(allows); !strings.Contains(why, "allows keyctl") || !strings.Contains(why, "must refuse") {
		t.Fatalf("profile allowing keyctl: %q", why)
	}
	if why := keyctlAllowed(refuses); why != "" {
		t.Fatalf("profile refusing keyctl: %q", why)
	}
	if why := keyctlAllowed(filepath.Join(dir, "missing.json")); why != "" {
		t.Fatalf("missing profile: %q", why)
	}
}

// TestSecretsCheckOnByDefault: doctor says which mode is in force and why
// on a host without a key source that needs no passphrase (warn: a
// plaintext credential, what to run) and after the first write created the
// keystore unattended (ok, sealed by systemd-creds). The host key is a
// private $SYSTEMD_CREDENTIAL_SECRET, never the host's.
func TestSecretsCheckOnByDefault(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs systemd-creds and root (host key)")
	}
	if exec.Command("systemd-creds", "has-tpm2").Run() == nil {
		t.Skip("this host has a TPM2: the source would be tpm2")
	}
	hostKey := filepath.Join(t.TempDir(), "credential.secret")
	t.Setenv("SYSTEMD_CREDENTIAL_SECRET", hostKey)
	dir := t.TempDir()
	store := secretsctl.Store{Dir: dir, DBPath: filepath.Join(dir, "credentials.db"), KeysJSON: filepath.Join(dir, "ssh-keys.json"), Encrypt: true}
	db, err := creddb.Open(store.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.StoreCredential(context.Background(), creddb.CredentialKey{Set: creddb.DefaultSet, Provider: "claude"}, creddb.Credential{"type": "api_key", "key": "sk-doctor-1"}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	v := secretsCheck(store, "").Evaluate(ProbeOutput{})
	if v.Severity != Warn || !strings.Contains(v.Detail, "plaintext") || !strings.Contains(v.Detail, hostKey) || !strings.Contains(v.Detail, "credentials unlock") {
		t.Fatalf("without a source: %+v", v)
	}
	if out, err := exec.Command("systemd-creds", "setup").CombinedOutput(); err != nil {
		t.Fatalf("systemd-creds setup: %v: %s", err, out)
	}
	v = secretsCheck(store, "").Evaluate(ProbeOutput{})
	if v.Severity != Warn || !strings.Contains(v.Detail, "creates one sealed by systemd-creds (host)") || !strings.Contains(v.Detail, "credentials migrate") {
		t.Fatalf("with a source, before a write: %+v", v)
	}
	if _, err := store.EnsureEncrypted(context.Background()); err != nil {
		t.Fatal(err)
	}
	v = secretsCheck(store, "").Evaluate(ProbeOutput{})
	if v.Severity != OK || !strings.HasPrefix(v.Detail, "encrypted") || !strings.Contains(v.Detail, "systemd-creds (host) only") || !strings.Contains(v.Detail, "1 sealed/0 plaintext") {
		t.Fatalf("after the first write: %+v", v)
	}
}
