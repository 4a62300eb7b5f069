package sshkeys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/secretstore"
)

const pemKey = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n"

func vaultIn(t *testing.T, dir string) *secretstore.Vault {
	t.Helper()
	_, kek, err := secretstore.Create(dir, []byte("key file passphrase"), secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return secretstore.OpenVaultWithKEK(dir, kek)
}

func writeSealed(t *testing.T, v *secretstore.Vault, path string) {
	t.Helper()
	w, err := v.BeginWrite()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	out, err := EncodePrivateKey(w, path, []byte(pemKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPrivateKeyFiles(t *testing.T) {
	dir := t.TempDir()
	v := vaultIn(t, dir)
	a, b := filepath.Join(dir, "proj", "id_a"), filepath.Join(dir, "other", "id_a")
	for _, p := range []string{a, b} {
		os.MkdirAll(filepath.Dir(p), 0o700)
	}
	writeSealed(t, v, a)
	raw, _ := os.ReadFile(a)
	if !bytes.HasPrefix(raw, []byte("terok-enc:v1:")) || !bytes.HasSuffix(raw, []byte("\n")) || bytes.Contains(raw, []byte("PRIVATE KEY")) {
		t.Fatalf("sealed key file: %.40q", raw)
	}
	got, err := ReadPrivateKey(v, a)
	if err != nil || string(got) != pemKey {
		t.Fatalf("read sealed: %v", err)
	}
	// Copied to another project's path: refused.
	os.WriteFile(b, raw, 0o600)
	if _, err := ReadPrivateKey(v, b); !errors.Is(err, secretstore.ErrOpen) || !strings.Contains(err.Error(), b) {
		t.Fatalf("moved key file: %v", err)
	}
	// Plaintext (older tools) is read as is, with or without a vault.
	os.WriteFile(b, []byte(pemKey), 0o600)
	for _, vv := range []*secretstore.Vault{v, nil} {
		if got, err := ReadPrivateKey(vv, b); err != nil || string(got) != pemKey {
			t.Fatalf("plaintext key: %v", err)
		}
	}
	// A sealed key without a vault: a clear error.
	if _, err := ReadPrivateKey(nil, a); !errors.Is(err, secretstore.ErrNoKeystore) {
		t.Fatalf("sealed key without vault: %v", err)
	}
	// Relative paths cannot be bound.
	w, _ := v.BeginWrite()
	if _, err := EncodePrivateKey(w, "id_rel", []byte(pemKey)); err == nil {
		t.Fatal("relative path accepted")
	}
	w.Close()
}

func TestRewriteKeyFile(t *testing.T) {
	dir := t.TempDir()
	v := vaultIn(t, dir)
	p := filepath.Join(dir, "id_k")
	os.WriteFile(p, []byte(pemKey), 0o644)
	if changed, err := RewriteKeyFile(filepath.Join(dir, "missing"), nil); changed || err != nil {
		t.Fatalf("missing file: %v %v", changed, err)
	}
	b, err := v.Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seal := func(val []byte) ([]byte, bool, error) { return b.Reseal(val, secretstore.KeyFileAD(p)) }
	if changed, err := RewriteKeyFile(p, seal); !changed || err != nil {
		t.Fatalf("seal: %v %v", changed, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after rewrite %v", fi.Mode())
	}
	if changed, err := RewriteKeyFile(p, seal); changed || err != nil {
		t.Fatalf("second seal: %v %v", changed, err)
	}
	if changed, err := RewriteKeyFile(p, func(val []byte) ([]byte, bool, error) {
		return b.Unseal(val, secretstore.KeyFileAD(p))
	}); !changed || err != nil {
		t.Fatalf("unseal: %v %v", changed, err)
	}
	if got, _ := os.ReadFile(p); string(got) != pemKey {
		t.Fatalf("after unseal: %q", got)
	}
}

func TestPrivateKeyPaths(t *testing.T) {
	m := Map{"b": {{PrivateKey: "/k/2"}, {PrivateKey: "/k/1"}}, "a": {{PrivateKey: "/k/1"}}}
	if got := strings.Join(m.PrivateKeyPaths(), ","); got != "/k/1,/k/2" {
		t.Fatalf("paths %s", got)
	}
}
