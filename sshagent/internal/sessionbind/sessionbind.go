// Package sessionbind parses and verifies the OpenSSH agent extension
// session-bind@openssh.com (docs/ssh-agent.md, "Destination-bound keys").
//
// OpenSSH 8.9 and later send it on every agent connection right after key
// exchange: the server's host key, the session identifier (exchange hash),
// the host key's signature over that identifier and whether the connection
// is a forwarding hop. A binding is trusted only once the signature verifies.
package sessionbind

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/sshagent/internal/wire"
)

// Name is the extension name carried in SSH_AGENTC_EXTENSION.
const Name = "session-bind@openssh.com"

// MsgExtension is SSH_AGENTC_EXTENSION.
const MsgExtension = 27

// MaxSessionID bounds the session identifier, as OpenSSH's agent does
// (AGENT_MAX_SID_LEN): an exchange hash is at most 64 bytes.
const MaxSessionID = 128

// ErrMalformed is returned for a truncated, overrunning or oversized message.
var ErrMalformed = errors.New("malformed session-bind")

// ErrSignature is returned when the host key's signature does not verify.
var ErrSignature = errors.New("session-bind signature does not verify")

// Bind is one verified binding of an agent connection.
type Bind struct {
	HostKey     ssh.PublicKey
	SessionID   []byte
	Forwarding  bool
	Fingerprint string // SHA256:... of HostKey
}

// ParseExtension splits an SSH_AGENTC_EXTENSION payload (after the type byte)
// into the extension name and its contents.
func ParseExtension(p []byte) (name string, contents []byte, err error) {
	n, rest, ok := wire.ReadString(p)
	if !ok {
		return "", nil, fmt.Errorf("%w: extension name", ErrMalformed)
	}
	return string(n), rest, nil
}

// Parse reads and verifies session-bind contents: string hostkey,
// string session_id, string signature, bool is_forwarding. Trailing bytes
// are refused (OpenSSH refuses them too).
func Parse(p []byte) (Bind, error) {
	hk, p, ok := wire.ReadString(p)
	if !ok {
		return Bind{}, fmt.Errorf("%w: host key", ErrMalformed)
	}
	sid, p, ok := wire.ReadString(p)
	if !ok {
		return Bind{}, fmt.Errorf("%w: session id", ErrMalformed)
	}
	sigBlob, p, ok := wire.ReadString(p)
	if !ok {
		return Bind{}, fmt.Errorf("%w: signature", ErrMalformed)
	}
	if len(p) != 1 {
		return Bind{}, fmt.Errorf("%w: is_forwarding", ErrMalformed)
	}
	if len(sid) == 0 || len(sid) > MaxSessionID {
		return Bind{}, fmt.Errorf("%w: session id of %d bytes", ErrMalformed, len(sid))
	}
	key, err := ssh.ParsePublicKey(hk)
	if err != nil {
		return Bind{}, fmt.Errorf("%w: host key: %v", ErrMalformed, err)
	}
	var sig ssh.Signature
	if err := ssh.Unmarshal(sigBlob, &sig); err != nil {
		return Bind{}, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if err := key.Verify(sid, &sig); err != nil {
		return Bind{}, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return Bind{
		HostKey:     key,
		SessionID:   append([]byte(nil), sid...),
		Forwarding:  p[0] != 0,
		Fingerprint: ssh.FingerprintSHA256(key),
	}, nil
}

// Marshal encodes session-bind contents (the inverse of Parse, for tests and
// clients).
func Marshal(hostKey ssh.PublicKey, sessionID []byte, sig *ssh.Signature, forwarding bool) []byte {
	var out []byte
	out = wire.AppendString(out, hostKey.Marshal())
	out = wire.AppendString(out, sessionID)
	out = wire.AppendString(out, ssh.Marshal(sig))
	if forwarding {
		return append(out, 1)
	}
	return append(out, 0)
}

// Message encodes a whole SSH_AGENTC_EXTENSION message body (type byte
// included) carrying the given session-bind contents.
func Message(contents []byte) []byte {
	out := wire.AppendString([]byte{MsgExtension}, []byte(Name))
	return append(out, contents...)
}
