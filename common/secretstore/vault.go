package secretstore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"terok.dev/sandbox/common/filelock"
)

// State is what a Vault can do.
type State int

// States of a Vault.
const (
	// NoKeystore: plaintext mode; values are written as they are, sealed
	// values cannot be read.
	NoKeystore State = iota
	// Locked: a keystore exists but its KEK is not cached (run unlock).
	Locked
	// Unlocked: values are sealed on write and opened on read.
	Unlocked
	// Broken: the keystore cannot be read or does not match the cached KEK.
	Broken
)

func (s State) String() string {
	switch s {
	case NoKeystore:
		return "plaintext (no keystore)"
	case Locked:
		return "encrypted, locked"
	case Unlocked:
		return "encrypted, unlocked"
	}
	return "encrypted, keystore unusable"
}

// Vault is one process's view of the keystore in a credentials directory:
// it opens sealed values and seals new ones. It re-reads the keystore when
// the file changes (a key rotation) and keeps the KEK it found in memory,
// so a daemon started while unlocked keeps working after `credentials
// lock` until it stops. A nil *Vault is plaintext mode. Safe for
// concurrent use.
type Vault struct {
	dir, path string

	mu  sync.Mutex
	kek []byte // nil until found (keyring) or given
	// fixedKEK: the KEK was given by the caller, never taken from the keyring.
	fixedKEK bool
	// triedCreds: systemd-creds was asked once already (it runs a program).
	triedCreds bool
	// credsErr is why systemd-creds did not open the key (kept for the
	// locked message: for a keystore without a passphrase it is the cause).
	credsErr error
	ks       *keystoreFile
	keys     *keySet
	stamp    fileStamp
	err      error // why keys is nil although a keystore exists
}

type fileStamp struct {
	ok         bool
	ino, size  uint64
	mtimeNanos int64
}

func stampOf(path string) (fileStamp, bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileStamp{}, false, nil
	}
	if err != nil {
		return fileStamp{}, false, err
	}
	st := fileStamp{ok: true, size: uint64(fi.Size()), mtimeNanos: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, true, nil
}

// OpenVault returns the vault of the credentials directory dir, taking the
// KEK from the kernel keyring. It never fails: State and Err say what it
// can do.
func OpenVault(dir string) *Vault {
	v := &Vault{dir: dir, path: filepath.Join(dir, FileName)}
	v.mu.Lock()
	v.refreshLocked()
	v.mu.Unlock()
	return v
}

// OpenVaultWithKEK is OpenVault with a KEK the caller derived (a command
// given --passphrase-file), bypassing the keyring.
func OpenVaultWithKEK(dir string, kek []byte) *Vault {
	v := &Vault{dir: dir, path: filepath.Join(dir, FileName), kek: append([]byte(nil), kek...), fixedKEK: true}
	v.mu.Lock()
	v.refreshLocked()
	v.mu.Unlock()
	return v
}

// KeystorePath is the keystore file.
func (v *Vault) KeystorePath() string { return v.path }

// refreshLocked re-reads the keystore when it changed since the last read.
func (v *Vault) refreshLocked() {
	st, exists, err := stampOf(v.path)
	if err != nil {
		v.ks, v.keys, v.err, v.stamp = nil, nil, fmt.Errorf("keystore %s: %w", v.path, err), fileStamp{}
		return
	}
	if !exists {
		v.ks, v.keys, v.err, v.stamp = nil, nil, nil, fileStamp{}
		return
	}
	if v.stamp.ok && st == v.stamp {
		return
	}
	ks, err := readKeystore(v.path)
	if errors.Is(err, ErrNoKeystore) {
		v.ks, v.keys, v.err, v.stamp = nil, nil, nil, fileStamp{}
		return
	}
	if err != nil {
		v.ks, v.keys, v.err = nil, nil, err
		return
	}
	v.ks, v.stamp = ks, st
	if v.kek == nil {
		kek, err := CachedKEK(ks.ID)
		if err != nil && ks.SystemdCreds != nil && !v.triedCreds {
			// Not cached, but enrolled with systemd-creds: a daemon starts
			// without an unlock. Asked once (it runs a program); the
			// keyring comes first because it costs no process.
			v.triedCreds = true
			if k, cerr := openKEKWithSystemdCreds(ks.ID, ks.SystemdCreds); cerr == nil {
				kek, err = k, nil
			} else {
				v.credsErr = cerr
			}
		}
		if errors.Is(err, errNotCached) && v.credsErr != nil {
			v.keys, v.err = nil, fmt.Errorf("%w (systemd-creds could not open the key: %v)", ErrLocked, v.credsErr)
			v.stamp = fileStamp{}
			return
		}
		if errors.Is(err, errNotCached) {
			v.keys, v.err = nil, ErrLocked
			v.stamp = fileStamp{} // look in the keyring again next time
			return
		}
		if err != nil {
			v.keys, v.err = nil, fmt.Errorf("%w: %v", ErrLocked, err)
			v.stamp = fileStamp{}
			return
		}
		v.kek = kek
	}
	keys, err := ks.unwrapKeys(v.kek)
	if errors.Is(err, ErrWrongPassphrase) && !v.fixedKEK {
		// The passphrase was changed (rotate-key --new-passphrase): the
		// keyring holds the new KEK.
		if kek, kerr := CachedKEK(ks.ID); kerr == nil {
			if k2, err2 := ks.unwrapKeys(kek); err2 == nil {
				clear(v.kek)
				v.kek, keys, err = kek, k2, nil
			}
		}
	}
	if err != nil {
		if errors.Is(err, ErrWrongPassphrase) {
			err = fmt.Errorf("the cached key does not open the keystore %s (was it replaced?); run 'terok-sandbox credentials lock', then unlock again", v.path)
		}
		v.keys, v.err = nil, err
		return
	}
	v.keys, v.err = keys, nil
}

// State reports the vault's state after looking at the keystore again.
func (v *Vault) State() State {
	if v == nil {
		return NoKeystore
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshLocked()
	return v.stateLocked()
}

func (v *Vault) stateLocked() State {
	switch {
	case v.keys != nil:
		return Unlocked
	case v.err == nil:
		return NoKeystore
	case errors.Is(v.err, ErrLocked):
		return Locked
	}
	return Broken
}

// Err is why a keystore that exists cannot be used (nil otherwise).
func (v *Vault) Err() error {
	if v == nil {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// StoreID is the keystore's id ("" without a readable keystore).
func (v *Vault) StoreID() string {
	if v == nil {
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ks == nil {
		return ""
	}
	return v.ks.ID
}

// KeyCount is how many data keys the keystore holds (more than one: a
// rotation is unfinished).
func (v *Vault) KeyCount() int {
	if v == nil {
		return 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ks == nil {
		return 0
	}
	return len(v.ks.Keys)
}

// Ready is the daemons' start check: nil in plaintext mode or when
// unlocked, else an error saying what the operator runs.
func (v *Vault) Ready() error {
	switch v.State() {
	case NoKeystore, Unlocked:
		return nil
	case Locked:
		why := ""
		v.mu.Lock()
		if v.credsErr != nil {
			why = fmt.Sprintf(" (systemd-creds could not open the key: %v)", v.credsErr)
		}
		v.mu.Unlock()
		return fmt.Errorf("the secrets in %s are encrypted and the store is locked%s: run 'terok-sandbox credentials unlock', then start this daemon again", v.dir, why)
	}
	return fmt.Errorf("the secrets in %s are encrypted but the keystore cannot be used: %v", v.dir, v.Err())
}

// Open decrypts a sealed value bound to ad. Plaintext is never passed
// here (check IsSealed first).
func (v *Vault) Open(value []byte, ad AD) ([]byte, error) {
	s, err := parseSealed(value)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, ErrNoKeystore
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshLocked()
	if v.keys == nil {
		if v.err == nil {
			return nil, ErrNoKeystore
		}
		return nil, v.err
	}
	return v.keys.open(s, ad)
}

// Writer seals values for one write (a database transaction, a key file):
// it holds the keystore lock shared, so a key rotation cannot finish
// between the seal and the write and strand a value under a dropped key.
type Writer struct {
	keys *keySet // nil: plaintext mode
	lk   *filelock.Lock
}

// BeginWrite starts a write. In plaintext mode it takes no lock and Encode
// returns its input; with a locked or unusable keystore it fails, so no
// plaintext is ever written into an encrypted store.
func (v *Vault) BeginWrite() (*Writer, error) {
	if v == nil {
		return &Writer{}, nil
	}
	if _, exists, _ := stampOf(v.path); !exists {
		return &Writer{}, nil
	}
	lk, err := filelock.Shared(v.path + lockSuffix)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.refreshLocked()
	keys, verr := v.keys, v.err
	v.mu.Unlock()
	if keys == nil && verr != nil {
		lk.Close()
		return nil, verr
	}
	if keys == nil { // removed meanwhile: plaintext mode now
		lk.Close()
		return &Writer{}, nil
	}
	return &Writer{keys: keys, lk: lk}, nil
}

// Sealing reports whether Encode seals.
func (w *Writer) Sealing() bool { return w.keys != nil }

// Encode seals plain bound to ad, or returns it unchanged in plaintext mode.
func (w *Writer) Encode(plain []byte, ad AD) ([]byte, error) {
	if w.keys == nil {
		return plain, nil
	}
	return w.keys.seal(plain, ad)
}

// Close releases the lock; call it after the write is durable.
func (w *Writer) Close() {
	if w.lk != nil {
		w.lk.Close()
		w.lk = nil
	}
}

// Batch is an exclusive hold on the keystore for operations on every value
// at once: key rotation and the move back to plaintext.
type Batch struct {
	v    *Vault
	lk   *filelock.Lock
	ks   *keystoreFile
	keys *keySet
	kek  []byte
}

// Exclusive takes the keystore lock exclusively (waiting for writers to
// finish) and requires an unlocked keystore.
func (v *Vault) Exclusive() (*Batch, error) {
	if v == nil {
		return nil, ErrNoKeystore
	}
	lk, err := filelock.Exclusive(v.path + lockSuffix)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.refreshLocked()
	b := &Batch{v: v, lk: lk, ks: v.ks, keys: v.keys, kek: v.kek}
	verr := v.err
	v.mu.Unlock()
	if b.keys == nil {
		lk.Close()
		if verr == nil {
			return nil, ErrNoKeystore
		}
		return nil, verr
	}
	return b, nil
}

// Close releases the lock; the vault re-reads the keystore on next use.
func (b *Batch) Close() {
	if b.lk != nil {
		b.lk.Close()
		b.lk = nil
	}
	b.v.mu.Lock()
	b.v.stamp = fileStamp{}
	b.v.mu.Unlock()
}

// Rotating reports whether the keystore holds keys besides the current one
// (a rotation started and not finished).
func (b *Batch) Rotating() bool { return len(b.ks.Keys) > 1 }

// StartRotation adds a fresh data key and makes it current, keeping the
// others so every value stays readable; the keystore is replaced
// atomically. A rotation already under way (left by a crash) is resumed
// with its new key instead.
func (b *Batch) StartRotation() error {
	if b.Rotating() {
		return nil
	}
	id, dek, err := newDataKey()
	if err != nil {
		return err
	}
	defer clear(dek)
	wk, err := wrapKey(b.kek, b.ks.ID, id, dek)
	if err != nil {
		return err
	}
	next := *b.ks
	next.Keys = append(append([]wrappedKey(nil), b.ks.Keys...), wk)
	next.Current = wk.ID
	keys, err := next.unwrapKeys(b.kek)
	if err != nil {
		return err
	}
	if err := writeKeystore(b.v.path, &next); err != nil {
		return err
	}
	b.ks, b.keys = &next, keys
	return nil
}

// Reseal returns value sealed under the current key, bound to ad, and
// whether it changed; plaintext is sealed, a value already under the
// current key is returned as it is.
func (b *Batch) Reseal(value []byte, ad AD) ([]byte, bool, error) {
	if !IsSealed(value) {
		out, err := b.keys.seal(value, ad)
		return out, err == nil, err
	}
	s, err := parseSealed(value)
	if err != nil {
		return nil, false, err
	}
	if s.key == b.keys.current {
		// Authenticate it anyway: a rotation must not carry a corrupt or
		// moved value forward unnoticed.
		if _, err := b.keys.open(s, ad); err != nil {
			return nil, false, err
		}
		return value, false, nil
	}
	plain, err := b.keys.open(s, ad)
	if err != nil {
		return nil, false, err
	}
	defer clear(plain)
	out, err := b.keys.seal(plain, ad)
	return out, err == nil, err
}

// Unseal returns the plaintext of value (unchanged if it is plaintext).
func (b *Batch) Unseal(value []byte, ad AD) ([]byte, bool, error) {
	if !IsSealed(value) {
		return value, false, nil
	}
	s, err := parseSealed(value)
	if err != nil {
		return nil, false, err
	}
	plain, err := b.keys.open(s, ad)
	return plain, err == nil, err
}

// Seal seals plain under the current key.
func (b *Batch) Seal(plain []byte, ad AD) ([]byte, error) { return b.keys.seal(plain, ad) }

// Open opens a sealed value with any key of the keystore.
func (b *Batch) Open(value []byte, ad AD) ([]byte, error) {
	s, err := parseSealed(value)
	if err != nil {
		return nil, err
	}
	return b.keys.open(s, ad)
}

// FinishRotation drops every key but the current one. Call it only once
// every value has been re-sealed.
func (b *Batch) FinishRotation() error {
	if !b.Rotating() {
		return nil
	}
	next := *b.ks
	next.Keys = nil
	for _, k := range b.ks.Keys {
		if k.ID == b.ks.Current {
			next.Keys = append(next.Keys, k)
		}
	}
	keys, err := next.unwrapKeys(b.kek)
	if err != nil {
		return err
	}
	if err := writeKeystore(b.v.path, &next); err != nil {
		return err
	}
	b.ks, b.keys = &next, keys
	return nil
}

// ChangePassphrase re-wraps every data key under a KEK derived from
// passphrase with a fresh salt and params and replaces the keystore
// atomically; it returns the new KEK (to cache with CacheKEK). The values
// are not touched: they are sealed with the data keys.
func (b *Batch) ChangePassphrase(passphrase []byte, params KDFParams) ([]byte, error) {
	if len(passphrase) < MinPassphrase {
		return nil, fmt.Errorf("the passphrase must have at least %d characters", MinPassphrase)
	}
	if err := params.check(); err != nil {
		return nil, err
	}
	deks, err := b.ks.unwrapRaw(b.kek)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, d := range deks {
			clear(d)
		}
	}()
	next := *b.ks
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("random salt: %w", err)
	}
	// A fresh section: the old one may be shared with b.ks. For a keystore
	// created unattended this adds its first passphrase.
	next.KDF = &kdfSection{Algorithm: "argon2id", Salt: base64.StdEncoding.EncodeToString(salt[:]), KDFParams: params}
	kek, err := next.deriveKEK(passphrase)
	if err != nil {
		return nil, err
	}
	next.Keys = nil
	for _, k := range b.ks.Keys {
		var id KeyID
		if _, err := hex.Decode(id[:], []byte(k.ID)); err != nil {
			return nil, fmt.Errorf("keystore key id %q: %w", k.ID, err)
		}
		wk, err := wrapKey(kek, next.ID, id, deks[k.ID])
		if err != nil {
			return nil, err
		}
		next.Keys = append(next.Keys, wk)
	}
	keys, err := next.unwrapKeys(kek)
	if err != nil {
		return nil, err
	}
	if sc := b.ks.SystemdCreds; sc != nil {
		// The enrollment sealed the old KEK: seal the new one the same
		// way, or drop it (status then shows it is gone).
		next.SystemdCreds, _ = sealKEKWithSystemdCreds(next.ID, kek, sc.WithKey)
	}
	if err := writeKeystore(b.v.path, &next); err != nil {
		return nil, err
	}
	b.ks, b.keys, b.kek = &next, keys, kek
	b.v.mu.Lock()
	b.v.kek = append([]byte(nil), kek...)
	b.v.mu.Unlock()
	return append([]byte(nil), kek...), nil
}

// CurrentKey is the id new values are sealed with.
func (b *Batch) CurrentKey() KeyID { return b.keys.current }

// RemoveKeystore deletes the keystore (plaintext mode from now on) and the
// cached KEK. Call it only once no sealed value is left.
func (b *Batch) RemoveKeystore() error {
	if err := os.Remove(b.v.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove keystore %s: %w", b.v.path, err)
	}
	if d, err := os.Open(filepath.Dir(b.v.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	_, err := ForgetKEK(b.ks.ID)
	return err
}

// KeyOf returns the id of the key a sealed value names.
func KeyOf(value []byte) (KeyID, error) {
	s, err := parseSealed(value)
	if err != nil {
		return KeyID{}, err
	}
	return s.key, nil
}
