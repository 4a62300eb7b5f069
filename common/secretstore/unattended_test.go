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

// TestCreateUnattended: with no TPM2 and no host key nothing is created
// (and systemd-creds is not allowed to create the host key); once the host
// key exists the keystore is created without a passphrase, opens through
// systemd-creds only, refuses passphrase unlocks and the removal of its only
// key source, and takes a recovery passphrase later.
func TestCreateUnattended(t *testing.T) {
	secret := systemdCredsHost(t)
	if out, err := exec.Command("systemd-creds", "has-tpm2").CombinedOutput(); err == nil {
		t.Skipf("this host has a TPM2 (%s): the host-key path is not the one taken", out)
	}
	dir := filepath.Join(t.TempDir(), "creds")

	mode, why := UnattendedSource()
	if mode != "" || !strings.Contains(why, secret) || !strings.Contains(why, "systemd-creds setup") {
		t.Fatalf("source without a host key: %q, %q", mode, why)
	}
	if _, _, err := CreateUnattended(dir); !errors.Is(err, ErrNoUnattendedSource) {
		t.Fatalf("create without a source: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keystore written without a source: %v", err)
	}
	if _, err := os.Stat(secret); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the host key was created as a side effect: %v", err)
	}

	// A host key that exists but does not work is no source either: the
	// caller falls back to plaintext with its warning, nothing is written.
	if err := os.WriteFile(secret, []byte("abc"), 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CreateUnattended(dir); !errors.Is(err, ErrNoUnattendedSource) || !strings.Contains(err.Error(), "sealing with systemd-creds (host) failed") {
		t.Fatalf("create with a broken host key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("keystore written with a broken host key: %v", err)
	}
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}

	if out, err := exec.Command("systemd-creds", "setup").CombinedOutput(); err != nil {
		t.Fatalf("systemd-creds setup: %v: %s", err, out)
	}
	mode, created, err := CreateUnattended(dir)
	if err != nil || !created || mode != "host" {
		t.Fatalf("create: %q %v %v", mode, created, err)
	}
	if _, again, err := CreateUnattended(dir); err != nil || again {
		t.Fatalf("second create: %v %v (must keep the first keystore)", again, err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, FileName))
	if bytes.Contains(raw, []byte(`"kdf"`)) || !bytes.Contains(raw, []byte(`"with_key": "host"`)) {
		t.Fatalf("keystore: %s", raw)
	}
	if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore mode: %v %v", fi.Mode(), err)
	}

	v := OpenVault(dir)
	if v.State() != Unlocked || v.HasPassphrase() || v.SystemdCredsMode() != "host" {
		t.Fatalf("vault: %v passphrase=%v mode=%q", v.State(), v.HasPassphrase(), v.SystemdCredsMode())
	}
	w, err := v.BeginWrite()
	if err != nil {
		t.Fatal(err)
	}
	ad := credAD("default", "claude")
	sealedVal, err := w.Encode([]byte(`{"key":"sk-unattended"}`), ad)
	w.Close()
	if err != nil || !IsSealed(sealedVal) {
		t.Fatalf("seal: %v", err)
	}
	// A fresh process (vault) opens it unattended.
	if plain, err := OpenVault(dir).Open(sealedVal, ad); err != nil || string(plain) != `{"key":"sk-unattended"}` {
		t.Fatalf("open: %q %v", plain, err)
	}

	if _, _, err := Unlock(dir, []byte("any passphrase")); !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("passphrase unlock of an unattended keystore: %v", err)
	}
	b, err := v.Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnrollSystemdCreds(""); err == nil || !strings.Contains(err.Error(), "no passphrase") {
		t.Fatalf("removing the only source: %v", err)
	}
	if _, err := b.ChangePassphrase([]byte("recovery passphrase"), testKDF); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if !OpenVault(dir).HasPassphrase() || OpenVault(dir).SystemdCredsMode() != "host" {
		t.Fatal("after adding a passphrase: passphrase or enrollment missing")
	}
	_, kek, err := Unlock(dir, []byte("recovery passphrase"))
	if err != nil {
		t.Fatalf("unlock with the recovery passphrase: %v", err)
	}
	if plain, err := OpenVaultWithKEK(dir, kek).Open(sealedVal, ad); err != nil || string(plain) != `{"key":"sk-unattended"}` {
		t.Fatalf("open with the recovery passphrase: %v", err)
	}
	if _, got, err := UnlockWithSystemdCreds(dir); err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("systemd-creds after the passphrase was added: %v", err)
	}

	// Another host key: the unattended store stays locked.
	t.Setenv("SYSTEMD_CREDENTIAL_SECRET", filepath.Join(t.TempDir(), "other.secret"))
	other := OpenVault(dir)
	if st := other.State(); st != Locked {
		t.Fatalf("with another host key: %v", st)
	}
	// The daemons' start check says why systemd-creds did not open it.
	if err := other.Ready(); err == nil || !strings.Contains(err.Error(), "systemd-creds could not open the key") || !strings.Contains(err.Error(), "credentials unlock") {
		t.Fatalf("ready with another host key: %v", err)
	}
}

// TestParseKeystoreWithoutKDF: a keystore without a passphrase must carry a
// systemd-creds entry, or nothing could open it.
func TestParseKeystoreWithoutKDF(t *testing.T) {
	base := `{"format":"terok-sandbox-keystore","version":1,"id":"0123456789abcdef0123456789abcdef",` +
		`"current":"0011223344556677","keys":[{"id":"0011223344556677","wrapped":"AAAA"}]`
	for _, tc := range []struct {
		name, json string
		ok         bool
	}{
		{"no kdf, no systemd_creds", base + `}`, false},
		{"no kdf, systemd_creds", base + `,"systemd_creds":{"with_key":"host","blob":"QUJD"}}`, true},
		{"no kdf, bad mode", base + `,"systemd_creds":{"with_key":"none","blob":"QUJD"}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseKeystore([]byte(tc.json))
			if (err == nil) != tc.ok {
				t.Fatalf("parse: %v", err)
			}
		})
	}
}
