package secretstore

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"terok.dev/sandbox/common/atomicfile"
)

// FileName is the keystore, beside credentials.db in the credentials
// directory. Its presence is what switches every component (the runner, the
// proxy, the SSH agent) to sealing new values (docs/secrets-at-rest.md,
// Modes).
const FileName = "credentials.keystore"

// lockSuffix names the lock file: writers of sealed values hold it shared,
// key rotation and the move back to plaintext hold it exclusively.
const lockSuffix = ".lock"

// keystoreFormat and keystoreVersion identify the file.
const (
	keystoreFormat  = "terok-sandbox-keystore"
	keystoreVersion = 1
)

// KEKSize is the key-encryption key's length (XChaCha20-Poly1305 key).
const KEKSize = chacha20poly1305.KeySize

// KDFParams are the Argon2id parameters stored with the salt.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF is RFC 9106's second recommended Argon2id setting (t=3,
// 64 MiB, 4 lanes): about a quarter second on one core of this class of host.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// check bounds the parameters read from a keystore, so a tampered file can
// neither make unlock run for hours nor allocate the host's memory.
func (p KDFParams) check() error {
	switch {
	case p.Time < 1 || p.Time > 64:
		return fmt.Errorf("argon2id time %d outside 1..64", p.Time)
	case p.MemoryKiB < 8*1024 || p.MemoryKiB > 4*1024*1024:
		return fmt.Errorf("argon2id memory %d KiB outside 8 MiB..4 GiB", p.MemoryKiB)
	case p.Threads < 1 || p.Threads > 64:
		return fmt.Errorf("argon2id threads %d outside 1..64", p.Threads)
	}
	return nil
}

// keystoreFile is the JSON of FileName (docs/secrets-at-rest.md, Keystore).
type keystoreFile struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// ID names the store in the kernel keyring; random, not secret.
	ID string `json:"id"`
	// KDF derives the KEK from the passphrase. Absent in a keystore created
	// unattended (CreateUnattended): its KEK is random and opens only
	// through SystemdCreds until a passphrase is added.
	KDF *kdfSection `json:"kdf,omitempty"`
	// Current seals new values; every other key is being rotated out and
	// is still needed to read the values not yet re-sealed.
	Current string       `json:"current"`
	Keys    []wrappedKey `json:"keys"`
	// SystemdCreds is the KEK sealed by systemd-creds (optional).
	SystemdCreds *systemdCreds `json:"systemd_creds,omitempty"`
}

type kdfSection struct {
	Algorithm string `json:"algorithm"`
	Salt      string `json:"salt"`
	KDFParams
}

// hasPassphrase reports whether a passphrase opens the keystore.
func (ks *keystoreFile) hasPassphrase() bool { return ks.KDF != nil }

type wrappedKey struct {
	ID      string `json:"id"`
	Wrapped string `json:"wrapped"` // base64 of nonce | XChaCha20-Poly1305(KEK, data key)
}

func parseKeystore(data []byte) (*keystoreFile, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var ks keystoreFile
	if err := dec.Decode(&ks); err != nil {
		return nil, fmt.Errorf("not a keystore: %w", err)
	}
	if ks.Format != keystoreFormat {
		return nil, fmt.Errorf("not a keystore (format %q)", ks.Format)
	}
	if ks.Version != keystoreVersion {
		return nil, fmt.Errorf("keystore version %d is not supported by this release (it knows %d); upgrade terok-sandbox", ks.Version, keystoreVersion)
	}
	if len(ks.ID) != 32 || !isHex(ks.ID) {
		return nil, errors.New("keystore id is not 32 hex digits")
	}
	if ks.KDF != nil {
		if ks.KDF.Algorithm != "argon2id" {
			return nil, fmt.Errorf("keystore KDF %q is not supported (argon2id is)", ks.KDF.Algorithm)
		}
		if err := ks.KDF.KDFParams.check(); err != nil {
			return nil, fmt.Errorf("keystore: %w", err)
		}
		if salt, err := base64.StdEncoding.DecodeString(ks.KDF.Salt); err != nil || len(salt) < 16 {
			return nil, errors.New("keystore salt is not base64 of at least 16 bytes")
		}
	} else if ks.SystemdCreds == nil {
		// Nothing could ever open it.
		return nil, errors.New("keystore has neither a passphrase (kdf) nor a systemd_creds entry")
	}
	seen := map[string]bool{}
	for _, k := range ks.Keys {
		if len(k.ID) != 2*KeyIDSize || !isHex(k.ID) || seen[k.ID] {
			return nil, fmt.Errorf("keystore key id %q is malformed or repeated", k.ID)
		}
		seen[k.ID] = true
	}
	if !seen[ks.Current] {
		return nil, fmt.Errorf("keystore current key %q is not among its keys", ks.Current)
	}
	if sc := ks.SystemdCreds; sc != nil && (!systemdCredsModes[sc.WithKey] || sc.Blob == "") {
		return nil, fmt.Errorf("keystore systemd_creds entry is malformed (with_key %q)", sc.WithKey)
	}
	return &ks, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func (ks *keystoreFile) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(ks, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// deriveKEK stretches the passphrase with the keystore's salt and
// parameters; ErrNoPassphrase when the keystore has none.
func (ks *keystoreFile) deriveKEK(passphrase []byte) ([]byte, error) {
	if ks.KDF == nil {
		return nil, ErrNoPassphrase
	}
	salt, _ := base64.StdEncoding.DecodeString(ks.KDF.Salt) // checked by parseKeystore
	p := ks.KDF.KDFParams
	return argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, KEKSize), nil
}

func wrapAD(storeID, keyID string) []byte {
	return []byte(keystoreFormat + "\x00" + storeID + "\x00" + keyID)
}

func wrapKey(kek []byte, storeID string, id KeyID, dek []byte) (wrappedKey, error) {
	a, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return wrappedKey{}, err
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(dek)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return wrappedKey{}, fmt.Errorf("random nonce: %w", err)
	}
	out := a.Seal(nonce, nonce, dek, wrapAD(storeID, id.String()))
	return wrappedKey{ID: id.String(), Wrapped: base64.StdEncoding.EncodeToString(out)}, nil
}

// unwrapKeys opens every data key with kek; any failure means a wrong
// passphrase (or a tampered keystore, which cannot be told apart).
func (ks *keystoreFile) unwrapKeys(kek []byte) (*keySet, error) {
	a, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	set := &keySet{aeads: map[KeyID]cipher.AEAD{}}
	for _, k := range ks.Keys {
		raw, err := base64.StdEncoding.DecodeString(k.Wrapped)
		if err != nil || len(raw) < a.NonceSize()+a.Overhead() {
			return nil, fmt.Errorf("keystore key %s is malformed", k.ID)
		}
		dek, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], wrapAD(ks.ID, k.ID))
		if err != nil {
			return nil, ErrWrongPassphrase
		}
		ka, err := chacha20poly1305.NewX(dek)
		if err != nil {
			return nil, fmt.Errorf("keystore key %s: %w", k.ID, err)
		}
		var id KeyID
		_, _ = hex.Decode(id[:], []byte(k.ID))
		set.aeads[id] = ka
		if k.ID == ks.Current {
			set.current = id
		}
	}
	return set, nil
}

// unwrapRaw returns every data key's bytes by id (for re-wrapping under a
// new KEK); the caller clears them.
func (ks *keystoreFile) unwrapRaw(kek []byte) (map[string][]byte, error) {
	a, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, k := range ks.Keys {
		raw, err := base64.StdEncoding.DecodeString(k.Wrapped)
		if err != nil || len(raw) < a.NonceSize()+a.Overhead() {
			return nil, fmt.Errorf("keystore key %s is malformed", k.ID)
		}
		dek, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], wrapAD(ks.ID, k.ID))
		if err != nil {
			for _, d := range out {
				clear(d)
			}
			return nil, ErrWrongPassphrase
		}
		out[k.ID] = dek
	}
	return out, nil
}

// newDataKey returns a fresh random data key and id.
func newDataKey() (KeyID, []byte, error) {
	var id KeyID
	dek := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
		return id, nil, fmt.Errorf("random key id: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, dek); err != nil {
		return id, nil, fmt.Errorf("random data key: %w", err)
	}
	return id, dek, nil
}

// MinPassphrase is the shortest passphrase Create accepts.
const MinPassphrase = 8

// Create writes a new keystore in dir protected by passphrase (stretched
// with params) holding one fresh data key, and returns the store's id and
// its KEK (for CacheKEK). It never replaces an existing keystore.
func Create(dir string, passphrase []byte, params KDFParams) (storeID string, kek []byte, err error) {
	if len(passphrase) < MinPassphrase {
		return "", nil, fmt.Errorf("the passphrase must have at least %d characters", MinPassphrase)
	}
	if err := params.check(); err != nil {
		return "", nil, err
	}
	ks := &keystoreFile{Format: keystoreFormat, Version: keystoreVersion}
	var rnd [16 + 16]byte
	if _, err := io.ReadFull(rand.Reader, rnd[:]); err != nil {
		return "", nil, fmt.Errorf("random salt: %w", err)
	}
	ks.ID = hex.EncodeToString(rnd[:16])
	ks.KDF = &kdfSection{Algorithm: "argon2id", Salt: base64.StdEncoding.EncodeToString(rnd[16:]), KDFParams: params}
	kek, err = ks.deriveKEK(passphrase)
	if err != nil {
		return "", nil, err
	}
	id, dek, err := newDataKey()
	if err != nil {
		return "", nil, err
	}
	wk, err := wrapKey(kek, ks.ID, id, dek)
	if err != nil {
		return "", nil, err
	}
	ks.Current, ks.Keys = wk.ID, []wrappedKey{wk}
	data, err := ks.marshal()
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, FileName)
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return "", nil, fmt.Errorf("create keystore %s: %w", path, err)
	}
	if err := createNew(path, data); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", nil, fmt.Errorf("a keystore already exists at %s; unlock it with its passphrase instead", path)
		}
		return "", nil, fmt.Errorf("create keystore %s: %w", path, err)
	}
	return ks.ID, kek, nil
}

// Unlock derives the KEK of the keystore in dir from passphrase and checks
// it opens every data key. ErrWrongPassphrase when it does not.
func Unlock(dir string, passphrase []byte) (storeID string, kek []byte, err error) {
	path := filepath.Join(dir, FileName)
	ks, err := readKeystore(path)
	if err != nil {
		return "", nil, err
	}
	if kek, err = ks.deriveKEK(passphrase); err != nil {
		return "", nil, err
	}
	if _, err := ks.unwrapKeys(kek); err != nil {
		return "", nil, err
	}
	return ks.ID, kek, nil
}

func dirKeystore(dir string) string { return filepath.Join(dir, FileName) }

// readKeystore reads and parses the keystore; ErrNoKeystore when absent.
func readKeystore(path string) (*keystoreFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoKeystore
	}
	if err != nil {
		return nil, fmt.Errorf("read keystore %s: %w", path, err)
	}
	ks, err := parseKeystore(data)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w; restore it from a backup", path, err)
	}
	return ks, nil
}

// createNew writes path atomically without ever replacing an existing
// file: a synced temporary file is hard-linked to path, which fails with
// os.ErrExist when another process created it first.
func createNew(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func writeKeystore(path string, ks *keystoreFile) error {
	data, err := ks.marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write keystore %s: %w", path, err)
	}
	return nil
}
