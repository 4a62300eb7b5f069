// Package restricted is an SSH agent that can only list and sign with a
// fixed set of keys (docs/ssh-agent.md, Design choices and why). It implements agent.ExtendedAgent so
// it plugs into anything built on golang.org/x/crypto/ssh/agent; every
// operation that would change, reveal or lock the key set is refused.
package restricted

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/sshagent/internal/keys"
)

// ErrRefused is returned for every operation other than list and sign.
var ErrRefused = errors.New("operation not permitted by terok-ssh-agent")

// ErrUnknownKey is returned for a sign request naming a key not offered.
var ErrUnknownKey = errors.New("key is not one of this session's identities")

// Agent serves one session: the keys of one project.
type Agent struct {
	keys []keys.Key
	log  *slog.Logger // carries project, task and peer
}

var _ agent.ExtendedAgent = (*Agent)(nil)

// New returns an agent over ks. log should already carry the session's
// project and peer; signatures are logged through it.
func New(ks []keys.Key, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{keys: ks, log: log}
}

// List returns the identities in announce order.
func (a *Agent) List() ([]*agent.Key, error) {
	out := make([]*agent.Key, 0, len(a.keys))
	for _, k := range a.keys {
		out = append(out, &agent.Key{Format: k.Type(), Blob: k.Blob, Comment: k.Comment})
	}
	return out, nil
}

// Lookup returns the session key whose wire blob is blob. Matching on the
// raw bytes means an untrusted blob is never parsed.
func (a *Agent) Lookup(blob []byte) (keys.Key, bool) {
	for _, k := range a.keys {
		if bytes.Equal(k.Blob, blob) {
			return k, true
		}
	}
	return keys.Key{}, false
}

// Logger is the session's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }

// Refused logs a sign request for a key outside the session.
func (a *Agent) Refused() {
	a.log.Warn("refused a sign request for a key that is not one of the project's; the client may hold keys of its own")
}

// Sign signs with the default algorithm of the key (ssh-rsa for RSA).
func (a *Agent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	return a.SignWithFlags(key, data, 0)
}

// SignWithFlags signs data; for RSA keys SignatureFlagRsaSha512 selects
// rsa-sha2-512, else SignatureFlagRsaSha256 rsa-sha2-256, else ssh-rsa.
func (a *Agent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	k, ok := a.Lookup(key.Marshal())
	if !ok {
		a.Refused()
		return nil, ErrUnknownKey
	}
	return a.SignKey(k, data, flags)
}

// SignKey signs data with k, a key of this session.
func (a *Agent) SignKey(k keys.Key, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	algo := Algorithm(k.Type(), flags)
	var sig *ssh.Signature
	var err error
	if as, ok := k.Signer.(ssh.AlgorithmSigner); ok && algo != "" {
		sig, err = as.SignWithAlgorithm(rand.Reader, data, algo)
	} else {
		sig, err = k.Signer.Sign(rand.Reader, data)
	}
	if err != nil {
		a.log.Error("signing failed", "key", k.Comment, "private_key", k.Private, "err", err)
		return nil, fmt.Errorf("sign with %s: %w", k.Private, err)
	}
	a.log.Info("signed", "key", k.Comment, "algorithm", sig.Format, "bytes", len(data))
	return sig, nil
}

// Algorithm is the signature algorithm for a key type and request flags;
// "" means the signer's own (Ed25519, ECDSA).
func Algorithm(keyType string, flags agent.SignatureFlags) string {
	if keyType != ssh.KeyAlgoRSA {
		return ""
	}
	switch {
	case flags&agent.SignatureFlagRsaSha512 != 0:
		return ssh.KeyAlgoRSASHA512
	case flags&agent.SignatureFlagRsaSha256 != 0:
		return ssh.KeyAlgoRSASHA256
	default:
		return ssh.KeyAlgoRSA
	}
}

// Add is refused.
func (a *Agent) Add(agent.AddedKey) error { return ErrRefused }

// Remove is refused.
func (a *Agent) Remove(ssh.PublicKey) error { return ErrRefused }

// RemoveAll is refused.
func (a *Agent) RemoveAll() error { return ErrRefused }

// Lock is refused.
func (a *Agent) Lock([]byte) error { return ErrRefused }

// Unlock is refused.
func (a *Agent) Unlock([]byte) error { return ErrRefused }

// Signers is refused: signers would hand out the private keys' capabilities
// to in-process callers without the logging of SignKey.
func (a *Agent) Signers() ([]ssh.Signer, error) { return nil, ErrRefused }

// Extension is unsupported (answered with FAILURE).
func (a *Agent) Extension(string, []byte) ([]byte, error) {
	return nil, agent.ErrExtensionUnsupported
}
