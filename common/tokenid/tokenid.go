// Package tokenid makes and checks the bearer tokens of the ecosystem: a fixed
// prefix followed by 32 lowercase hex digits from a CSPRNG, and shows them in
// logs only by prefix.
package tokenid

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

const (
	// GatePrefix starts every gate token (docs/formats.md, Gate tokens file).
	GatePrefix = "terok-g-"
	// PhantomPrefix starts every phantom token (docs/formats.md, Phantom tokens).
	PhantomPrefix = "terok-p-"
	// HexLen is the number of hex digits after the prefix (16 random bytes).
	HexLen = 32
)

// New returns prefix + 32 lowercase hex digits of 16 crypto/rand bytes.
func New(prefix string) (string, error) {
	var b [HexLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// Valid reports whether tok is prefix followed by exactly 32 lowercase hex digits.
func Valid(prefix, tok string) bool {
	if len(tok) != len(prefix)+HexLen || tok[:len(prefix)] != prefix {
		return false
	}
	for _, c := range tok[len(prefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Show returns a form of tok that is safe to log: a known prefix plus four
// characters, or a bare length for anything else (which may be a real secret
// that was sent by mistake).
func Show(tok string) string {
	for _, p := range []string{GatePrefix, PhantomPrefix} {
		if len(tok) > len(p)+4 && tok[:len(p)] == p {
			return tok[:len(p)+4] + "…"
		}
	}
	return fmt.Sprintf("<%d chars>", len(tok))
}
