// Package secretstore keeps the sandbox's secrets encrypted at rest
// (docs/secrets-at-rest.md): the versioned sealed-value format, the keystore
// file holding the data keys wrapped under a key-encryption key (KEK), the
// KEK's sources (an Argon2id-stretched passphrase, cached in the kernel
// keyring after an unlock) and the Vault every reader and writer of a sealed
// value goes through.
package secretstore

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/crypto/chacha20poly1305"

	"terok.dev/sandbox/common/names"
)

// Prefix starts every sealed value, whatever its version: a value that does
// not start with it is plaintext written by an older tool.
const Prefix = "terok-enc:"

// prefixV1 is version 1: base64url (no padding) of key id | nonce | AEAD
// ciphertext (docs/secrets-at-rest.md, Value format).
const prefixV1 = Prefix + "v1:"

// KeyIDSize is the length of a data key's id, stored in front of each value.
const KeyIDSize = 8

// KeyID names one data key of the keystore.
type KeyID [KeyIDSize]byte

// String is the id's hex form, as written in the keystore.
func (id KeyID) String() string { return fmt.Sprintf("%x", id[:]) }

// minSealedLen is the shortest well-formed binary body: id, nonce and tag.
const minSealedLen = KeyIDSize + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// maxSealedLen bounds what is decoded; credential values and key files are
// far smaller (1 MiB is the input limit of both).
const maxSealedLen = 4 << 20

var b64 = base64.RawURLEncoding.Strict()

// IsSealed reports whether v is a sealed value (of any version). Leading
// and trailing whitespace is ignored, as key files end with a newline.
func IsSealed(v []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(v), []byte(Prefix))
}

// sealed is a parsed version-1 value.
type sealed struct {
	key   KeyID
	nonce []byte
	ct    []byte // ciphertext with tag
}

// ErrFormat is returned for a value that starts with Prefix but is not a
// well-formed sealed value.
var ErrFormat = errors.New("malformed sealed value")

// parseSealed parses a sealed value; untrusted input (it is read from files
// and database rows other tools may write).
func parseSealed(v []byte) (sealed, error) {
	v = bytes.TrimSpace(v)
	if !bytes.HasPrefix(v, []byte(Prefix)) {
		return sealed{}, fmt.Errorf("%w: missing %q prefix", ErrFormat, Prefix)
	}
	if !bytes.HasPrefix(v, []byte(prefixV1)) {
		rest := v[len(Prefix):]
		if i := bytes.IndexByte(rest, ':'); i > 0 && i <= 8 {
			return sealed{}, fmt.Errorf("%w: version %q is not supported by this release (it knows v1); upgrade terok-sandbox", ErrFormat, rest[:i])
		}
		return sealed{}, fmt.Errorf("%w: no version after %q", ErrFormat, Prefix)
	}
	body := v[len(prefixV1):]
	if b64.EncodedLen(maxSealedLen) < len(body) {
		return sealed{}, fmt.Errorf("%w: longer than %d bytes", ErrFormat, maxSealedLen)
	}
	raw := make([]byte, b64.DecodedLen(len(body)))
	n, err := b64.Decode(raw, body)
	if err != nil {
		return sealed{}, fmt.Errorf("%w: bad base64 (%v)", ErrFormat, err)
	}
	raw = raw[:n]
	if len(raw) < minSealedLen {
		return sealed{}, fmt.Errorf("%w: %d bytes is shorter than key id, nonce and tag", ErrFormat, len(raw))
	}
	var s sealed
	copy(s.key[:], raw[:KeyIDSize])
	s.nonce = raw[KeyIDSize : KeyIDSize+chacha20poly1305.NonceSizeX]
	s.ct = raw[KeyIDSize+chacha20poly1305.NonceSizeX:]
	return s, nil
}

// format encodes a version-1 value.
func (s sealed) format() []byte {
	raw := make([]byte, 0, KeyIDSize+len(s.nonce)+len(s.ct))
	raw = append(append(append(raw, s.key[:]...), s.nonce...), s.ct...)
	out := make([]byte, len(prefixV1)+b64.EncodedLen(len(raw)))
	copy(out, prefixV1)
	b64.Encode(out[len(prefixV1):], raw)
	return out
}

// AD is the associated data binding a sealed value to where it is stored:
// a value copied to another row or file fails to open. Build it with
// CredentialAD or KeyFileAD.
type AD []byte

// CredentialAD binds a credentials-table value to its row (credential set
// and provider, one value so the two cannot be swapped).
func CredentialAD(key names.CredentialKey) AD {
	return bind("credential", key.Set, key.Provider)
}

// KeyFileAD binds a private key file's content to its path (cleaned); the
// project is part of the path (<ssh-keys>/<project>/<name>).
func KeyFileAD(path string) AD { return bind("ssh-private-key", filepath.Clean(path)) }

// bind encodes kind and parts with length prefixes, so no two different
// identities encode alike ("a\x00b" + "c" vs "a" + "b\x00c").
func bind(kind string, parts ...string) AD {
	out := binary.BigEndian.AppendUint32(nil, uint32(len(kind)))
	out = append(out, kind...)
	for _, p := range parts {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out
}

// aeadAD is what the AEAD authenticates: the version, the key id (so the
// header cannot be edited to point at another key) and the binding.
func aeadAD(key KeyID, ad AD) []byte {
	out := make([]byte, 0, len(prefixV1)+KeyIDSize+len(ad))
	return append(append(append(out, prefixV1...), key[:]...), ad...)
}
