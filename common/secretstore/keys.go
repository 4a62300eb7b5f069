package secretstore

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Errors a caller tells apart. Their text says what to run; none of them
// ever carries a secret.
var (
	// ErrNoKeystore: a sealed value was met but there is no keystore.
	ErrNoKeystore = errors.New("there is no keystore to decrypt with (" + FileName +
		" is missing from the credentials directory); restore it from a backup, or store the secret again")
	// ErrLocked: the keystore exists but no KEK is cached.
	ErrLocked = errors.New("the secret store is locked; run 'terok-sandbox credentials unlock' first")
	// ErrWrongPassphrase: the passphrase does not open the keystore.
	ErrWrongPassphrase = errors.New("wrong passphrase: it does not open the keystore")
	// ErrNoPassphrase: the keystore was created unattended and has no
	// passphrase yet.
	ErrNoPassphrase = errors.New("this keystore has no passphrase: it opens with systemd-creds on this host only; " +
		"add a recovery passphrase with 'terok-sandbox credentials rotate-key --new-passphrase'")
	// ErrUnknownKey: the value names a data key the keystore does not have.
	ErrUnknownKey = errors.New("the value was sealed with a key this keystore does not have (a keystore from another host, or restored from an older backup)")
	// ErrOpen: authentication failed.
	ErrOpen = errors.New("the value does not decrypt: it is corrupt, or it was moved here from another row or file")
)

// keySet is the unwrapped data keys, by id.
type keySet struct {
	current KeyID
	aeads   map[KeyID]cipher.AEAD
}

// seal encrypts plain under the current key, bound to ad.
func (k *keySet) seal(plain []byte, ad AD) ([]byte, error) {
	a := k.aeads[k.current]
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("random nonce: %w", err)
	}
	s := sealed{key: k.current, nonce: nonce}
	s.ct = a.Seal(nil, nonce, plain, aeadAD(k.current, ad))
	return s.format(), nil
}

// open decrypts a parsed value bound to ad.
func (k *keySet) open(s sealed, ad AD) ([]byte, error) {
	a, ok := k.aeads[s.key]
	if !ok {
		return nil, fmt.Errorf("%w (key %s)", ErrUnknownKey, s.key)
	}
	plain, err := a.Open(nil, s.nonce, s.ct, aeadAD(s.key, ad))
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}
