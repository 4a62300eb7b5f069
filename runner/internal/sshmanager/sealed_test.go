package sshmanager

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

// sealingManager is newManager with an encrypted store: a keystore in the
// credentials directory and its KEK given directly.
func sealingManager(t *testing.T) Manager {
	t.Helper()
	m := newManager(t)
	dir := filepath.Dir(m.KeysJSON)
	_, kek, err := secretstore.Create(dir, []byte("manager test passphrase"), secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Vault = secretstore.OpenVaultWithKEK(dir, kek)
	return m
}

// openKey reads a (sealed) private key through the vault and parses it.
func openKey(t *testing.T, m Manager, path string) ssh.Signer {
	t.Helper()
	raw, _ := os.ReadFile(path)
	if !bytes.HasPrefix(raw, []byte(secretstore.Prefix)) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatalf("%s is not sealed", path)
	}
	plain, err := sshkeys.ReadPrivateKey(m.Vault, path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(plain)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealedAddKeyAndInit(t *testing.T) {
	m := sealingManager(t)
	r, err := m.AddKey("p", "", TypeEd25519)
	if err != nil {
		t.Fatal(err)
	}
	s := openKey(t, m, r.PrivateKey)
	pub, _ := os.ReadFile(r.PublicKey)
	pk, _, _, _, _ := ssh.ParseAuthorizedKey(pub)
	if !bytes.Equal(pk.Marshal(), s.PublicKey().Marshal()) || mode(t, r.PrivateKey) != 0o600 {
		t.Fatal("sealed key does not match its public key")
	}
	ir, err := m.Init(InitOptions{Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	openKey(t, m, ir.PrivateKey)
}

func TestSealedImportIsIdempotent(t *testing.T) {
	m := sealingManager(t)
	src := writeKey(t, t.TempDir(), "id_a", "ed25519", "a")
	r1, err := m.Import("p", src, "")
	if err != nil {
		t.Fatal(err)
	}
	openKey(t, m, r1.PrivateKey)
	r2, err := m.Import("p", src, "")
	if err != nil || r2.PrivateKey != r1.PrivateKey {
		t.Fatalf("re-import of the same key made %s (want %s): %v", r2.PrivateKey, r1.PrivateKey, err)
	}
}

func TestLockedStoreWritesNoKey(t *testing.T) {
	m := sealingManager(t)
	m.Vault = secretstore.OpenVault(filepath.Dir(m.KeysJSON)) // no cached key: locked
	_, err := m.AddKey("p", "side", TypeEd25519)
	if !errors.Is(err, secretstore.ErrLocked) {
		t.Fatalf("add-key while locked: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(m.KeysDir, "p"))
	for _, e := range ents {
		if e.Name() != ".add-key.lock" {
			t.Fatalf("a refused add-key left %s", e.Name())
		}
	}
}
