// Package restricted is an SSH agent that can only list and sign with a
// fixed set of keys (docs/ssh-agent.md, Design choices and why). It implements agent.ExtendedAgent so
// it plugs into anything built on golang.org/x/crypto/ssh/agent; every
// operation that would change, reveal or lock the key set is refused.
package restricted

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/sshagent/internal/keys"
	"terok.dev/sandbox/sshagent/internal/metrics"
)

// ErrRefused is returned for every operation other than list and sign.
var ErrRefused = errors.New("operation not permitted by terok-ssh-agent")

// ErrUnknownKey is returned for a sign request naming a key not offered.
var ErrUnknownKey = errors.New("key is not one of this session's identities")

// ErrExpired is returned once the session's token has expired.
var ErrExpired = errors.New("the session's token has expired")

// ErrTaskGone is returned once the session token's container has ended.
var ErrTaskGone = errors.New("the session token's container has ended")

// ErrDestination is returned for a destination-bound key outside a bound session.
var ErrDestination = errors.New("key is bound to destinations and this request is not in a session bound to one")

// ErrAudit is returned when the audit record of a signature cannot be
// written: the signature is then withheld (docs/audit.md, Channel ssh).
var ErrAudit = errors.New("audit record not written; signature withheld")

// Agent serves one session: the keys of one project.
type Agent struct {
	keys  []keys.Key
	log   *slog.Logger  // carries project, task and peer
	audit *audit.Writer // nil: no records
	base  audit.Record  // project, task, token prefix, remote of the session
	exp   time.Time     // the session token's expiry; zero: none
	gone  func() bool   // the session token's container has ended; nil: never
	met   *metrics.Metrics
}

// SetMetrics makes the agent count its sign requests on m (nil: none).
func (a *Agent) SetMetrics(m *metrics.Metrics) { a.met = m }

// SetExpiry makes the agent refuse to sign from t on (the session token's
// expiry, docs/ssh-agent.md, Token expiry); zero: never.
func (a *Agent) SetExpiry(t time.Time) { a.exp = t }

// SetGone makes the agent refuse to sign once gone reports true (the
// session token's container has ended, docs/security-model.md, Tokens
// that die with their task); nil: never.
func (a *Agent) SetGone(gone func() bool) { a.gone = gone }

// Gone reports whether the session token's container has ended.
func (a *Agent) Gone() bool { return a.gone != nil && a.gone() }

// Expired reports whether the session's token has expired at now.
func (a *Agent) Expired(now time.Time) bool { return !a.exp.IsZero() && !now.Before(a.exp) }

var _ agent.ExtendedAgent = (*Agent)(nil)

// New returns an agent over ks. log should already carry the session's
// project and peer; signatures are logged through it.
func New(ks []keys.Key, log *slog.Logger) *Agent {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{keys: ks, log: log}
}

// SetAudit makes the agent write one record per signature and per refused
// sign request to w (docs/audit.md, Channel ssh). base carries the session's
// project, task, token prefix and its "remote" member. Call it before use.
func (a *Agent) SetAudit(w *audit.Writer, base audit.Record) {
	a.audit = w
	a.base = base
}

// Dest is what the connection's session-bind records say about where a
// signature goes (docs/ssh-agent.md, Destination-bound keys).
type Dest struct {
	Fingerprint string // host key of the last binding, "" when unbound
	Forwarded   bool   // some binding of the connection was a forwarding hop
}

// Fingerprint is OpenSSH's SHA256 fingerprint of a public key blob. It is
// computed over the bytes, so an untrusted blob is never parsed.
func Fingerprint(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Decision is one audited outcome of a sign request.
type Decision struct {
	Event, Outcome, Reason string
	KeyBlob                []byte // the requested key's blob (known or not)
	Comment                string
	Data                   []byte // hashed, never recorded
	Algorithm              string
	Dest                   Dest
}

// Record writes the audit record of d; nil when auditing is off or the
// record is on disk. Only the data's SHA-256 is recorded, never the data.
func (a *Agent) Record(d Decision) error {
	if a.audit == nil {
		return nil
	}
	r := a.base
	r.Channel, r.Event, r.Outcome, r.Reason = "ssh", d.Event, d.Outcome, d.Reason
	f := make(map[string]any, len(a.base.Fields)+7)
	for k, v := range a.base.Fields {
		f[k] = v
	}
	if d.KeyBlob != nil {
		f["key_fingerprint"] = Fingerprint(d.KeyBlob)
	}
	if d.Comment != "" {
		f["key_comment"] = d.Comment
	}
	if d.Data != nil {
		sum := sha256.Sum256(d.Data)
		f["data_sha256"] = hex.EncodeToString(sum[:])
	}
	if d.Algorithm != "" {
		f["sig_algorithm"] = d.Algorithm
	}
	if d.Dest.Fingerprint != "" {
		f["dest_fingerprint"] = d.Dest.Fingerprint
	}
	if d.Dest.Forwarded {
		f["forwarded"] = true
	}
	r.Fields = f
	if err := a.audit.Write(r); err != nil {
		a.log.Error("cannot write the audit record; check the audit file's directory and disk space", "err", err)
		return fmt.Errorf("%w: %v", ErrAudit, err)
	}
	return nil
}

// Refuse records a refused sign request and logs it.
func (a *Agent) Refuse(reason string, blob []byte, k *keys.Key, data []byte, d Dest) {
	a.met.Sign("refused", reason, 0)
	dec := Decision{Event: "refused", Outcome: "refused", Reason: reason, KeyBlob: blob, Data: data, Dest: d}
	if k != nil {
		dec.Comment = k.Comment
	}
	_ = a.Record(dec)
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
	blob := key.Marshal()
	k, ok := a.Lookup(blob)
	if !ok {
		a.Refused()
		a.Refuse("no-key", blob, nil, data, Dest{})
		return nil, ErrUnknownKey
	}
	if a.Expired(time.Now()) {
		a.Refuse("expired", blob, &k, data, Dest{})
		return nil, ErrExpired
	}
	if a.Gone() {
		a.Refuse("task-gone", blob, &k, data, Dest{})
		return nil, ErrTaskGone
	}
	if k.Dest != nil {
		// No connection, so no session-bind: a destination-bound key
		// cannot sign here (docs/ssh-agent.md, Destination-bound keys).
		a.Refuse("destination", blob, &k, data, Dest{})
		return nil, ErrDestination
	}
	return a.SignKey(k, data, flags, Dest{})
}

// SignKey signs data with k, a key of this session, and records the
// signature (or its failure) with the destination d. When the record
// cannot be written the signature is withheld (ErrAudit).
func (a *Agent) SignKey(k keys.Key, data []byte, flags agent.SignatureFlags, d Dest) (*ssh.Signature, error) {
	start := time.Now()
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
		_ = a.Record(Decision{Event: "sign", Outcome: "error", Reason: "sign-failed", KeyBlob: k.Blob,
			Comment: k.Comment, Data: data, Algorithm: algo, Dest: d})
		a.met.Sign("error", "sign-failed", time.Since(start))
		return nil, fmt.Errorf("sign with %s: %w", k.Private, err)
	}
	if err := a.Record(Decision{Event: "sign", Outcome: "ok", KeyBlob: k.Blob, Comment: k.Comment,
		Data: data, Algorithm: sig.Format, Dest: d}); err != nil {
		a.met.Sign("error", "audit", time.Since(start)) // withheld
		return nil, err
	}
	a.met.Sign("ok", "", time.Since(start))
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
