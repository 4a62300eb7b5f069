package secretsctl

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/secretstore"
)

// privateHostKey points systemd-creds' host key at a file of the test's own
// ($SYSTEMD_CREDENTIAL_SECRET), never the host's
// /var/lib/systemd/credential.secret; create makes it exist (systemd-creds
// setup), else the path stays missing: a host without a key source.
func privateHostKey(t *testing.T, create bool) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("systemd-creds' host key needs root")
	}
	if exec.Command("systemd-creds", "has-tpm2").Run() == nil {
		t.Skip("this host has a TPM2: the unattended source would be tpm2, not the private host key")
	}
	secret := filepath.Join(t.TempDir(), "credential.secret")
	t.Setenv("SYSTEMD_CREDENTIAL_SECRET", secret)
	if create {
		if out, err := exec.Command("systemd-creds", "setup").CombinedOutput(); err != nil {
			t.Fatalf("systemd-creds setup: %v: %s", err, out)
		}
	}
	return secret
}

func TestEnsureEncrypted(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		hostKey   bool
		encrypt   bool
		created   bool
		plaintext bool
	}{
		{"host key, encryption on: keystore created, old values sealed", true, true, true, false},
		{"no source, encryption on: plaintext with a warning", false, true, false, true},
		{"encryption off: nothing", true, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := privateHostKey(t, tc.hostKey)
			f := legacyFixture(t, 20, 2)
			f.Encrypt = tc.encrypt
			before, err := f.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.encrypt && tc.hostKey && !strings.Contains(before.Why, "systemd-creds (host)") {
				t.Fatalf("status before says nothing of the source: %q", before.Why)
			}
			if tc.encrypt && !tc.hostKey && (!strings.Contains(before.Why, secret) || !strings.Contains(strings.Join(before.Next, " "), "credentials unlock")) {
				t.Fatalf("status without a source: %q %q", before.Why, before.Next)
			}
			setup, err := f.EnsureEncrypted(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if setup.Created != tc.created || setup.Plaintext != tc.plaintext {
				t.Fatalf("setup: %+v", setup)
			}
			_, statErr := os.Stat(filepath.Join(f.Dir, secretstore.FileName))
			if exists := statErr == nil; exists != tc.created {
				t.Fatalf("keystore exists %v, want %v", exists, tc.created)
			}
			if tc.plaintext {
				if !strings.Contains(setup.Warning, "stored in plaintext") || !strings.Contains(setup.Warning, "credentials unlock") {
					t.Fatalf("warning: %q", setup.Warning)
				}
				if _, err := os.Stat(secret); !errors.Is(err, os.ErrNotExist) {
					t.Fatal("the host key was created as a side effect")
				}
			}
			st, err := f.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.created {
				if st.Mode != "plaintext" || st.Credentials.Plaintext != 20 {
					t.Fatalf("status: %+v", st)
				}
				return
			}
			if setup.Mode != "host" || setup.Migrated.Credentials != 20 || setup.Migrated.KeyFiles != 2 || !setup.Migrated.WALClean {
				t.Fatalf("setup: %+v", setup)
			}
			f.checkReadable(t, "created unattended")
			f.scan(t)
			if st.Mode != "encrypted" || st.Problem || st.Credentials.Sealed != 20 || st.KeyFiles.Sealed != 2 ||
				!strings.Contains(st.Why, "systemd-creds (host) only") || !strings.Contains(strings.Join(st.Next, " "), "--new-passphrase") {
				t.Fatalf("status after: %+v", st)
			}
			// No passphrase to unlock with; the recovery passphrase is added
			// by rotate-key and then opens it.
			if _, err := f.Unlock([]byte(passphrase), 0, testKDF); !errors.Is(err, secretstore.ErrNoPassphrase) {
				t.Fatalf("passphrase unlock: %v", err)
			}
			if res, err := f.Rotate(ctx, []byte(passphrase), testKDF); err != nil || !res.PassphraseChanged {
				t.Fatalf("add a passphrase: %+v %v", res, err)
			}
			t.Cleanup(func() { _, _ = f.Lock() })
			if _, err := f.Unlock([]byte(passphrase), 0, testKDF); err != nil {
				t.Fatalf("unlock with the recovery passphrase: %v", err)
			}
			// Idempotent: a keystore exists.
			if again, err := f.EnsureEncrypted(ctx); err != nil || again.Created || again.Plaintext {
				t.Fatalf("second ensure: %+v %v", again, err)
			}
		})
	}
}

// TestMigrateCreatesUnattended: `credentials migrate` on a host with a
// source needs no unlock first.
func TestMigrateCreatesUnattended(t *testing.T) {
	privateHostKey(t, true)
	f := legacyFixture(t, 5, 1)
	res, err := f.Migrate(context.Background())
	if err != nil || res.Credentials != 5 || res.KeyFiles != 1 {
		t.Fatalf("migrate: %+v %v", res, err)
	}
	f.checkReadable(t, "migrated unattended")
	f.scan(t)
}

// TestEnsureEncryptedFirstSSHKey: an SSH key as the first secret does not
// create a credentials database.
func TestEnsureEncryptedFirstSSHKey(t *testing.T) {
	privateHostKey(t, true)
	dir := t.TempDir()
	s := Store{Dir: dir, DBPath: filepath.Join(dir, "credentials.db"), KeysJSON: filepath.Join(dir, "ssh-keys.json"), Encrypt: true}
	setup, err := s.EnsureEncrypted(context.Background())
	if err != nil || !setup.Created {
		t.Fatalf("setup: %+v %v", setup, err)
	}
	if _, err := os.Stat(s.DBPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("credentials.db created: %v", err)
	}
}
