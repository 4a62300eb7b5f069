// Package destination decides whether a destination-bound key may sign on
// a connection (docs/ssh-agent.md, Destination-bound keys): the key entry's
// destinations (host patterns and host key fingerprints) are resolved to a
// set of host key fingerprints, host patterns through a known_hosts file
// the operator keeps; a signature is allowed only for an SSH user
// authentication request of the session the connection's last,
// non-forwarded session-bind names, to an allowed host key.
package destination

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/sshagent/internal/sessionbind"
	"terok.dev/sandbox/sshagent/internal/wire"
)

// Refusal reasons (docs/audit.md, Channel ssh).
const (
	ReasonDestination = "destination"
	ReasonForwarded   = "forwarded"
)

// HostKey is one usable known_hosts line.
type HostKey struct {
	Marker      string   // "", "revoked" or "cert-authority"
	Hosts       []string // the line's host names and patterns, as written
	Fingerprint string   // SHA256:... of the key
}

// MaxKnownHostsLine bounds one line; longer lines are reported and skipped.
const MaxKnownHostsLine = 16 << 10

// ParseKnownHosts reads an OpenSSH known_hosts file. Lines that do not
// parse are skipped and reported with their line number (the caller logs
// them); comments and blank lines are ignored.
func ParseKnownHosts(data []byte) ([]HostKey, []error) {
	var out []HostKey
	var errs []error
	for i, line := range bytes.Split(data, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		if len(t) > MaxKnownHostsLine {
			errs = append(errs, fmt.Errorf("line %d: longer than %d bytes", i+1, MaxKnownHostsLine))
			continue
		}
		marker, hosts, key, _, _, err := ssh.ParseKnownHosts(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %v", i+1, err))
			continue
		}
		out = append(out, HostKey{Marker: marker, Hosts: hosts, Fingerprint: ssh.FingerprintSHA256(key)})
	}
	return out, errs
}

// Policy is a key's resolved destinations. A nil *Policy is an
// unrestricted key.
type Policy struct {
	Destinations []string // as in ssh-keys.json
	allowed      map[string]bool
}

// Resolve turns destinations into the set of allowed host key
// fingerprints: a `SHA256:` entry stands for itself; a host pattern for
// every key of a known_hosts line with a host name it matches. Keys of
// @revoked lines are never allowed, also when named by fingerprint;
// @cert-authority lines are not used (host certificates are not supported).
func Resolve(destinations []string, known []HostKey) *Policy {
	p := &Policy{Destinations: destinations, allowed: map[string]bool{}}
	var patterns []string
	for _, d := range destinations {
		if strings.HasPrefix(d, sshkeys.FingerprintPrefix) {
			p.allowed[d] = true
		} else {
			patterns = append(patterns, strings.ToLower(d))
		}
	}
	for _, hk := range known {
		if hk.Marker != "" {
			continue
		}
		if matchesAny(patterns, hk.Hosts) {
			p.allowed[hk.Fingerprint] = true
		}
	}
	for _, hk := range known {
		if hk.Marker == "revoked" {
			delete(p.allowed, hk.Fingerprint)
		}
	}
	return p
}

// Allows reports whether a host key fingerprint is one of the policy's.
func (p *Policy) Allows(fingerprint string) bool { return p != nil && p.allowed[fingerprint] }

// Allowed is the number of host keys the policy allows (for logs).
func (p *Policy) Allowed() int { return len(p.allowed) }

// matchesAny reports whether some pattern matches some host name of a
// known_hosts line. Names are compared without a [host]:port wrapper and
// case-insensitively; negated names (!name) never match; a hashed name
// (|1|salt|hash) matches a pattern without wildcards that hashes to it.
func matchesAny(patterns, hosts []string) bool {
	for _, h := range hosts {
		if strings.HasPrefix(h, "!") {
			continue
		}
		if strings.HasPrefix(h, "|1|") {
			for _, p := range patterns {
				if !strings.ContainsAny(p, "*?") && hashedMatch(h, p) {
					return true
				}
			}
			continue
		}
		h = strings.ToLower(stripPort(h))
		for _, p := range patterns {
			if Match(p, h) {
				return true
			}
		}
	}
	return false
}

func stripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			return h[1:i]
		}
	}
	return h
}

// hashedMatch checks an OpenSSH hashed host name |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
func hashedMatch(hashed, name string) bool {
	parts := strings.Split(hashed, "|")
	if len(parts) != 4 {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	m := hmac.New(sha1.New, salt)
	m.Write([]byte(name))
	return hmac.Equal(m.Sum(nil), sum)
}

// Match reports whether name matches pattern, where '*' matches any run of
// characters and '?' any one character (OpenSSH's host pattern wildcards).
func Match(pattern, name string) bool {
	// Iterative matching with one backtrack point: linear in practice and
	// never exponential.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// UserAuth is the data a client signs for SSH public key user
// authentication (RFC 4252, section 7; OpenSSH's
// publickey-hostbound-v00@openssh.com adds the server's host key).
type UserAuth struct {
	SessionID, User, Service, Method, Algorithm, KeyBlob []byte
	HostKey                                              []byte // hostbound method only
}

// Methods of a public key user authentication request.
const (
	MethodPublicKey = "publickey"
	MethodHostbound = "publickey-hostbound-v00@openssh.com"
)

// MsgUserAuthRequest is SSH_MSG_USERAUTH_REQUEST.
const MsgUserAuthRequest = 50

// ErrNotUserAuth is returned for data that is not a public key user
// authentication request.
var ErrNotUserAuth = errors.New("not an SSH user authentication request")

// ParseUserAuth parses data to be signed as a user authentication request,
// strictly: no trailing bytes.
func ParseUserAuth(data []byte) (UserAuth, error) {
	var u UserAuth
	var ok bool
	fail := func(what string) (UserAuth, error) {
		return UserAuth{}, fmt.Errorf("%w: %s", ErrNotUserAuth, what)
	}
	if u.SessionID, data, ok = wire.ReadString(data); !ok || len(u.SessionID) == 0 {
		return fail("session id")
	}
	if len(data) < 1 || data[0] != MsgUserAuthRequest {
		return fail("message type")
	}
	data = data[1:]
	if u.User, data, ok = wire.ReadString(data); !ok {
		return fail("user")
	}
	if u.Service, data, ok = wire.ReadString(data); !ok {
		return fail("service")
	}
	if u.Method, data, ok = wire.ReadString(data); !ok {
		return fail("method")
	}
	method := string(u.Method)
	if method != MethodPublicKey && method != MethodHostbound {
		return fail("method " + method)
	}
	if len(data) < 1 || data[0] == 0 {
		return fail("has-signature flag")
	}
	data = data[1:]
	if u.Algorithm, data, ok = wire.ReadString(data); !ok {
		return fail("algorithm")
	}
	if u.KeyBlob, data, ok = wire.ReadString(data); !ok {
		return fail("key")
	}
	if method == MethodHostbound {
		if u.HostKey, data, ok = wire.ReadString(data); !ok {
			return fail("host key")
		}
	}
	if len(data) != 0 {
		return fail("trailing bytes")
	}
	return u, nil
}

// Check decides whether a key with policy p may sign data on a connection
// holding binds (in arrival order). It returns "" when it may, else the
// refusal reason (ReasonDestination or ReasonForwarded) and what an
// operator reads in the log. A nil policy always may.
func Check(p *Policy, binds []sessionbind.Bind, keyBlob, data []byte) (reason, why string) {
	if p == nil {
		return "", ""
	}
	if len(binds) == 0 {
		return ReasonDestination, "the connection is not bound to a host (no session-bind: not an OpenSSH >= 8.9 ssh client logging in)"
	}
	for _, b := range binds {
		if b.Forwarding {
			return ReasonForwarded, "the key is used through a forwarded agent"
		}
	}
	last := binds[len(binds)-1]
	if !p.Allows(last.Fingerprint) {
		return ReasonDestination, "the connection is bound to host key " + last.Fingerprint + ", which is not one of the key's destinations"
	}
	u, err := ParseUserAuth(data)
	if err != nil {
		return ReasonDestination, "a destination-bound key signs only SSH user authentication (" + err.Error() + ")"
	}
	if !bytes.Equal(u.SessionID, last.SessionID) {
		return ReasonDestination, "the authentication request is for another session than the bound one"
	}
	if !bytes.Equal(u.KeyBlob, keyBlob) {
		return ReasonDestination, "the authentication request names another key"
	}
	if u.HostKey != nil && !bytes.Equal(u.HostKey, last.HostKey.Marshal()) {
		return ReasonDestination, "the authentication request names another host key than the bound one"
	}
	return "", ""
}
