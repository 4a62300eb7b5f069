package sshmanager

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/sshkeys"
)

// Key types accepted by init and add-key.
const (
	TypeEd25519 = "ed25519"
	TypeRSA     = "rsa"
)

// RSABits is the modulus size of generated RSA keys (ssh-keygen's default).
const RSABits = 3072

// ErrKeyType is the spec's message for any other key type.
var ErrKeyType = specErrorf("Unsupported --key-type. Use 'ed25519' or 'rsa'.")

// CheckKeyType validates a --key-type value.
func CheckKeyType(t string) error {
	if t != TypeEd25519 && t != TypeRSA {
		return ErrKeyType
	}
	return nil
}

// GenerateKey makes a key pair: the private key in OpenSSH format
// (unencrypted, like `ssh-keygen -N ""`) and the public key line with comment.
func GenerateKey(keyType, comment string) (priv, pub []byte, err error) {
	var key crypto.Signer
	switch keyType {
	case TypeEd25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case TypeRSA:
		key, err = rsa.GenerateKey(rand.Reader, RSABits)
	default:
		return nil, nil, ErrKeyType
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	block, err := ssh.MarshalPrivateKey(key, comment)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	if comment != "" {
		line += " " + comment
	}
	return pem.EncodeToMemory(block), []byte(line + "\n"), nil
}

// writeNew creates path with data and mode perm atomically and without ever
// replacing an existing file: the data goes to a temporary file in the same
// directory, is synced, and is hard-linked to path (which fails if path
// exists). Readers never see a partial key.
func writeNew(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("key file already exists: %s: %w", path, os.ErrExist)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// writePair writes a generated key pair without clobbering: if the public
// key cannot be written the private key is removed again. The private key
// is sealed when the store is encrypted (docs/secrets-at-rest.md, Value
// format); a locked store refuses the write rather than leave a plaintext
// key behind.
func (m Manager) writePair(privPath, pubPath string, priv, pub []byte) error {
	w, err := m.Vault.BeginWrite()
	if err != nil {
		return fmt.Errorf("write private key %s: %w", privPath, err)
	}
	defer w.Close()
	content, err := sshkeys.EncodePrivateKey(w, privPath, priv)
	if err != nil {
		return err
	}
	if err := writeNew(privPath, content, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pub, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	return nil
}

// specError carries a user-facing message whose exact wording the spec
// fixes (capitalised, full sentences), optionally wrapping a cause.
type specError struct {
	msg   string
	cause error
}

func (e *specError) Error() string { return e.msg }
func (e *specError) Unwrap() error { return e.cause }

// specErrorf formats like fmt.Errorf, including %w.
func specErrorf(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &specError{msg: err.Error(), cause: errors.Unwrap(err)}
}
