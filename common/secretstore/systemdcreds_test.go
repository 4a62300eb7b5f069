package secretstore

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemdCredsHost points systemd-creds' host key at a file of the test's
// own ($SYSTEMD_CREDENTIAL_SECRET), so the host's real key is not used.
func systemdCredsHost(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("systemd-creds' host key needs root")
	}
	secret := filepath.Join(t.TempDir(), "credential.secret")
	t.Setenv("SYSTEMD_CREDENTIAL_SECRET", secret)
	return secret
}

func TestSystemdCredsEnrollment(t *testing.T) {
	systemdCredsHost(t)
	dir, id, kek := newStore(t)
	b, err := OpenVault(dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnrollSystemdCreds("bogus"); err == nil {
		t.Fatal("unknown mode accepted")
	}
	// No TPM here: a clear error, nothing enrolled.
	err = b.EnrollSystemdCreds("tpm2")
	if err == nil || !strings.Contains(err.Error(), "TPM2") {
		t.Fatalf("tpm2 without a TPM: %v", err)
	}
	if err := b.EnrollSystemdCreds("host"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	data, _ := os.ReadFile(filepath.Join(dir, FileName))
	if bytes.Contains(data, kek) {
		t.Fatal("keystore holds the KEK in clear")
	}
	gotID, got, err := UnlockWithSystemdCreds(dir)
	if err != nil || gotID != id || !bytes.Equal(got, kek) {
		t.Fatalf("unlock with systemd-creds: %v", err)
	}
	// A daemon without a cached key opens the store through systemd-creds.
	if _, err := ForgetKEK(id); err != nil {
		t.Fatal(err)
	}
	v := OpenVault(dir)
	if v.State() != Unlocked || v.SystemdCredsMode() != "host" {
		t.Fatalf("vault with systemd-creds: %v %q", v.State(), v.SystemdCredsMode())
	}
	// Another host (another host key): refused, still locked.
	t.Setenv("SYSTEMD_CREDENTIAL_SECRET", filepath.Join(t.TempDir(), "other.secret"))
	if _, _, err := UnlockWithSystemdCreds(dir); err == nil {
		t.Fatal("another host key opened the sealed KEK")
	}
	if OpenVault(dir).State() != Locked {
		t.Fatal("vault unlocked with another host key")
	}
}

func TestSystemdCredsFollowsPassphraseChange(t *testing.T) {
	systemdCredsHost(t)
	dir, _, _ := newStore(t)
	b, err := OpenVault(dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnrollSystemdCreds("host"); err != nil {
		t.Fatal(err)
	}
	newKEK, err := b.ChangePassphrase([]byte("changed passphrase"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, err := UnlockWithSystemdCreds(dir); err != nil || !bytes.Equal(got, newKEK) {
		t.Fatalf("systemd-creds after a passphrase change: %v", err)
	}
	if err := b.EnrollSystemdCreds(""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := UnlockWithSystemdCreds(dir); !errors.Is(err, ErrNoSystemdCreds) {
		t.Fatalf("after removal: %v", err)
	}
}
