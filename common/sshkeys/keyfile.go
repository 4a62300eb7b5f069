package sshkeys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/secretstore"
)

// MaxPrivateKeyFile bounds what is read from a private key file; real keys
// are a few KiB, sealed ones a third more.
const MaxPrivateKeyFile = 2 << 20

// Private key files (the private_key paths of the map) are either the
// key's PEM/OpenSSH text as ssh-keygen writes it (plaintext, older tools)
// or one sealed value and a newline, bound to the file's path
// (docs/secrets-at-rest.md, Value format).

// ReadPrivateKey reads the private key file at path and returns its
// plaintext, opening it with v when it is sealed. The plaintext is the
// caller's to clear.
func ReadPrivateKey(v *secretstore.Vault, path string) ([]byte, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	return DecodePrivateKey(v, path, data)
}

// DecodePrivateKey is ReadPrivateKey for content already read.
func DecodePrivateKey(v *secretstore.Vault, path string, data []byte) ([]byte, error) {
	if !secretstore.IsSealed(data) {
		return data, nil
	}
	plain, err := v.Open(data, secretstore.KeyFileAD(path))
	if err != nil {
		return nil, fmt.Errorf("private key %s is encrypted: %w", path, err)
	}
	return plain, nil
}

// EncodePrivateKey is the content to write for a private key at path under
// w: a sealed value and a newline when the store is encrypted, the key
// itself in plaintext mode.
func EncodePrivateKey(w *secretstore.Writer, path string, plain []byte) ([]byte, error) {
	if !w.Sealing() {
		return plain, nil
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("seal private key %s: the path must be absolute (it is bound into the value)", path)
	}
	out, err := w.Encode(plain, secretstore.KeyFileAD(path))
	if err != nil {
		return nil, fmt.Errorf("seal private key %s: %w", path, err)
	}
	return append(out, '\n'), nil
}

// RewriteKeyFile replaces the content of the key file at path with what
// change returns for it (atomically, keeping mode 0600); it reports
// whether the file changed. A missing file is skipped (false, nil).
func RewriteKeyFile(path string, change func(value []byte) ([]byte, bool, error)) (bool, error) {
	data, err := readKeyFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	value := data
	if secretstore.IsSealed(data) {
		value = bytes.TrimSpace(data)
	}
	out, changed, err := change(value)
	if err != nil {
		return false, fmt.Errorf("private key %s: %w", path, err)
	}
	if !changed {
		return false, nil
	}
	if secretstore.IsSealed(out) {
		out = append(out, '\n')
	}
	if err := atomicfile.WriteFile(path, out, 0o600); err != nil {
		return false, err
	}
	return true, nil
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPrivateKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxPrivateKeyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes, not a key file", path, MaxPrivateKeyFile)
	}
	return data, nil
}

// PrivateKeyPaths is every distinct private key path of the map, in
// project then file order.
func (m Map) PrivateKeyPaths() []string {
	projects := make([]string, 0, len(m))
	for p := range m {
		projects = append(projects, p)
	}
	slices.Sort(projects)
	seen := map[string]bool{}
	var out []string
	for _, p := range projects {
		for _, e := range m[p] {
			if !seen[e.PrivateKey] {
				seen[e.PrivateKey] = true
				out = append(out, e.PrivateKey)
			}
		}
	}
	return out
}
