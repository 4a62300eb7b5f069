// Package keys turns a project's entries in ssh-keys.json into signers
// (docs/ssh-agent.md, Design choices and why). The map is re-read on every call so newly registered
// keys are seen without a restart; parsed keys are cached per project and
// reloaded whenever a key file or the project's entry list changes.
package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unicode"

	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
	"terok.dev/sandbox/sshagent/internal/destination"
)

// MainPrefix marks a project's primary key; such keys are offered first.
const MainPrefix = "tk-main:"

// MaxKeyFileSize bounds what is read from a key file; real keys are a few KiB.
const MaxKeyFileSize = 1 << 20

// MinRSABits is the smallest RSA modulus the agent signs with.
const MinRSABits = 2048

// Key is one loaded identity.
type Key struct {
	Signer  ssh.Signer
	Blob    []byte // wire form of the public key, as announced
	Comment string
	Private string // private key path, for logs
	// Dest restricts the key to sessions bound to its destinations
	// (docs/ssh-agent.md, Destination-bound keys); nil: unrestricted.
	Dest *destination.Policy
}

// Type is the public key algorithm (ssh-ed25519, ssh-rsa, ecdsa-sha2-…).
func (k Key) Type() string { return k.Signer.PublicKey().Type() }

// Store loads keys from one ssh-keys.json. Safe for concurrent use.
type Store struct {
	path  string
	log   *slog.Logger
	vault *secretstore.Vault // nil: plaintext key files only
	known string             // known_hosts resolving host patterns; "" none

	mu        sync.Mutex
	cache     map[string]cached
	knownSt   string // stamp of the parsed known_hosts
	knownKeys []destination.HostKey
}

// MaxKnownHostsSize bounds what is read of the known_hosts file.
const MaxKnownHostsSize = 4 << 20

type cached struct {
	fingerprint string
	keys        []Key
}

// NewStore returns a store reading the map at path.
func NewStore(path string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{path: path, log: log, cache: map[string]cached{}}
}

// SetVault lets the store open sealed private key files
// (docs/secrets-at-rest.md). Call it before the store is used.
func (s *Store) SetVault(v *secretstore.Vault) { s.vault = v }

// SetKnownHosts names the known_hosts file that resolves the host patterns
// of key destinations (docs/ssh-agent.md, Destination-bound keys). Call it
// before the store is used.
func (s *Store) SetKnownHosts(path string) { s.known = path }

// knownHosts returns the parsed known_hosts, re-read when its stamp
// changes. A missing file is no host keys (patterns then match nothing);
// bad lines are logged and skipped.
func (s *Store) knownHosts(st string) []destination.HostKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == s.knownSt {
		return s.knownKeys
	}
	s.knownSt, s.knownKeys = st, nil
	if s.known == "" {
		return nil
	}
	data, err := readLimitedN(s.known, MaxKnownHostsSize)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.log.Error("cannot read the known_hosts file; host-pattern destinations match no host until it is fixed", "path", s.known, "err", err)
		}
		return nil
	}
	keys, errs := destination.ParseKnownHosts(data)
	for _, e := range errs {
		s.log.Warn("skipping a known_hosts line that does not parse", "path", s.known, "err", e)
	}
	s.knownKeys = keys
	return keys
}

// Project returns project's loadable keys in announce order (tk-main: keys
// first, otherwise file order). No keys is an empty slice, never an error:
// the reasons are logged for the operator.
func (s *Store) Project(project string) []Key {
	m, err := sshkeys.Read(s.path)
	if err != nil {
		s.log.Error("cannot read the SSH key map; no keys are served until it is fixed",
			"path", s.path, "err", err)
	}
	entries := m[project]
	knownSt := ""
	if s.known != "" {
		knownSt = stamp(s.known)
	}
	fp := fingerprint(entries) + "|" + knownSt

	s.mu.Lock()
	for p := range s.cache {
		if _, ok := m[p]; !ok {
			delete(s.cache, p)
		}
	}
	if c, ok := s.cache[project]; ok && c.fingerprint == fp {
		s.mu.Unlock()
		return c.keys
	}
	s.mu.Unlock()

	// Parse outside the lock: RSA parsing is slow and projects are independent.
	var loaded []Key
	for _, e := range entries {
		if e.Problem != "" {
			// Serving it unrestricted would lift the operator's restriction.
			s.log.Error("skipping SSH key with unusable destinations; fix them in ssh-keys.json (terok-sandbox ssh restrict)",
				"project", project, "private_key", e.PrivateKey, "err", e.Problem)
			continue
		}
		k, err := LoadSealedPair(s.vault, e.PrivateKey, e.PublicKey)
		if err != nil {
			s.log.Error("skipping SSH key that cannot be loaded; fix or re-register it in ssh-keys.json",
				"project", project, "private_key", e.PrivateKey, "err", err)
			continue
		}
		if e.Destinations != nil {
			k.Dest = destination.Resolve(e.Destinations, s.knownHosts(knownSt))
			if k.Dest.Allowed() == 0 {
				s.log.Warn("destination-bound SSH key matches no host key; it signs for no host (add the hosts to the known_hosts file or name fingerprints)",
					"project", project, "private_key", e.PrivateKey, "destinations", strings.Join(e.Destinations, ","), "known_hosts", s.known)
			}
		}
		loaded = append(loaded, k)
	}
	sort.SliceStable(loaded, func(i, j int) bool {
		return isMain(loaded[i]) && !isMain(loaded[j])
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	if len(loaded) == 0 {
		delete(s.cache, project)
		return nil
	}
	s.cache[project] = cached{fingerprint: fp, keys: loaded}
	return loaded
}

func isMain(k Key) bool { return strings.HasPrefix(k.Comment, MainPrefix) }

// fingerprint identifies the state of a project's entries: every path with
// its mtime, size and inode, so an in-place rotation or a rename over the
// file both cause a reload.
func fingerprint(entries []sshkeys.Entry) string {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(stamp(e.PrivateKey))
		b.WriteByte('|')
		b.WriteString(stamp(e.PublicKey))
		b.WriteString("|" + strings.Join(e.Destinations, ",") + "|" + e.Problem)
	}
	return b.String()
}

func stamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return path + ":0"
	}
	ino := uint64(0)
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return path + ":" + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + ":" +
		strconv.FormatInt(fi.Size(), 10) + ":" + strconv.FormatUint(ino, 10)
}

// LoadPair loads a plaintext private key and its .pub file and checks that
// they belong together.
func LoadPair(privPath, pubPath string) (Key, error) { return LoadSealedPair(nil, privPath, pubPath) }

// LoadSealedPair is LoadPair for a private key file that may be sealed: it
// is opened with v in memory; the plaintext is cleared once parsed (the
// parsed key lives on in the signer).
func LoadSealedPair(v *secretstore.Vault, privPath, pubPath string) (Key, error) {
	privData, err := readLimited(privPath)
	if err != nil {
		return Key{}, err
	}
	sealed := secretstore.IsSealed(privData)
	privData, err = sshkeys.DecodePrivateKey(v, privPath, privData)
	if err != nil {
		return Key{}, err
	}
	signer, err := ParsePrivate(privData)
	if sealed {
		clear(privData)
	}
	if err != nil {
		return Key{}, fmt.Errorf("private key %s: %w", privPath, err)
	}
	pubData, err := readLimited(pubPath)
	if err != nil {
		return Key{}, err
	}
	_, blob, comment, err := ParsePublicLine(pubData)
	if err != nil {
		return Key{}, fmt.Errorf("public key %s: %w", pubPath, err)
	}
	want := signer.PublicKey()
	if !bytes.Equal(blob, want.Marshal()) {
		return Key{}, fmt.Errorf("public key %s does not belong to private key %s", pubPath, privPath)
	}
	return Key{Signer: signer, Blob: blob, Comment: comment, Private: privPath}, nil
}

func readLimited(path string) ([]byte, error) { return readLimitedN(path, MaxKeyFileSize) }

func readLimitedN(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// ErrUnsupported is returned for key types the agent does not sign with.
var ErrUnsupported = errors.New("unsupported key type")

// ParsePrivate parses an unencrypted Ed25519, RSA (>= 2048 bits) or ECDSA
// private key in OpenSSH or PEM (PKCS#1, PKCS#8, SEC 1) format.
func ParsePrivate(data []byte) (ssh.Signer, error) {
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, errors.New("encrypted private keys are not supported; import an unencrypted copy")
		}
		return nil, err
	}
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("RSA key has %d bits, at least %d are required", k.N.BitLen(), MinRSABits)
		}
		// Validate once and keep the CRT values: otherwise crypto/rsa redoes
		// this work on every signature.
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("invalid RSA key: %w", err)
		}
		k.Precompute()
	case *ecdsa.PrivateKey, ed25519.PrivateKey, *ed25519.PrivateKey:
	default:
		return nil, fmt.Errorf("%w %T", ErrUnsupported, raw)
	}
	return ssh.NewSignerFromKey(raw)
}

// ParsePublicLine parses a .pub file: key type, base64 blob and an optional
// comment that may contain spaces. The blob must parse as a public key of
// the named type.
func ParsePublicLine(data []byte) (typ string, blob []byte, comment string, err error) {
	fields := splitFields(string(data), 3)
	if len(fields) < 2 {
		return "", nil, "", errors.New("expected '<type> <base64> [comment]'")
	}
	typ, b64 := fields[0], fields[1]
	if len(fields) == 3 {
		// The agent protocol carries comments as UTF-8.
		comment = strings.ToValidUTF8(strings.TrimRightFunc(fields[2], unicode.IsSpace), "\uFFFD")
	}
	blob, err = base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", nil, "", fmt.Errorf("invalid base64 key blob: %w", err)
	}
	pk, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return "", nil, "", fmt.Errorf("invalid key blob: %w", err)
	}
	if pk.Type() != typ {
		return "", nil, "", fmt.Errorf("type field %q does not match the key blob (%s)", typ, pk.Type())
	}
	return typ, blob, comment, nil
}

// splitFields splits s on runs of whitespace into at most n fields; the last
// field keeps its inner whitespace (like Python's str.split(None, n-1)).
func splitFields(s string, n int) []string {
	var out []string
	for {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		if s == "" {
			return out
		}
		if len(out) == n-1 {
			return append(out, s)
		}
		i := strings.IndexFunc(s, unicode.IsSpace)
		if i < 0 {
			return append(out, s)
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}
