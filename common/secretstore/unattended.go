package secretstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"terok.dev/sandbox/common/atomicfile"
)

// Encryption on by default (docs/secrets-at-rest.md, Modes): when the
// operator has not set up a keystore, the runner's first write of a secret
// creates one whose KEK is random and sealed by systemd-creds with a key
// the host already has, so no passphrase is asked and the daemons open it
// unattended. A passphrase can be added later as a recovery secret
// (rotate-key --new-passphrase).

// defaultHostKey is systemd's credential host key; $SYSTEMD_CREDENTIAL_SECRET
// (systemd's own variable) moves it, which the tests use.
const defaultHostKey = "/var/lib/systemd/credential.secret"

// HostKeyPath is where systemd-creds looks for the host key.
func HostKeyPath() string {
	if p := os.Getenv("SYSTEMD_CREDENTIAL_SECRET"); p != "" {
		return p
	}
	return defaultHostKey
}

// UnattendedSource is the best systemd-creds key that can seal a KEK on
// this host without a passphrase: "tpm2" when systemd-creds reports full
// TPM2 support, else "host" when the host key exists and is readable; ""
// with the reason when there is none.
//
// The host key is used only when it exists: systemd-creds would create a
// missing one, but a host-wide secret is the administrator's to create
// (`systemd-creds setup`), not a side effect of storing a credential.
func UnattendedSource() (mode, why string) {
	path, err := exec.LookPath("systemd-creds")
	if err != nil {
		return "", "systemd-creds is not installed"
	}
	// has-tpm2 exits 0 only when firmware, driver and systemd all support
	// TPM2; its output goes nowhere (it names no secret).
	ctx, cancel := context.WithTimeout(context.Background(), systemdCredsTimeout)
	defer cancel()
	if exec.CommandContext(ctx, path, "has-tpm2").Run() == nil {
		return "tpm2", ""
	}
	key := HostKeyPath()
	f, err := os.Open(key)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Sprintf("no TPM2, and systemd's host key %s does not exist (root can create it with 'systemd-creds setup')", key)
	case errors.Is(err, os.ErrPermission):
		return "", fmt.Sprintf("no TPM2, and systemd's host key %s is readable by root only", key)
	case err != nil:
		return "", fmt.Sprintf("no TPM2, and systemd's host key %s cannot be read: %v", key, err)
	}
	f.Close()
	return "host", ""
}

// ErrNoUnattendedSource: no key source works without a passphrase.
var ErrNoUnattendedSource = errors.New("no key source without a passphrase on this host")

// CreateUnattended creates the keystore in dir with a random KEK sealed by
// systemd-creds in the mode UnattendedSource picks, proven to open again
// before the keystore is written. created is false (and err nil) when a
// keystore appeared meanwhile (another process won the race); it is never
// replaced. ErrNoUnattendedSource, with the reason, when no source works
// (none found, or the one found fails to seal and open a key).
func CreateUnattended(dir string) (mode string, created bool, err error) {
	mode, why := UnattendedSource()
	if mode == "" {
		return "", false, fmt.Errorf("%w: %s", ErrNoUnattendedSource, why)
	}
	ks := &keystoreFile{Format: keystoreFormat, Version: keystoreVersion}
	var rid [16]byte
	if _, err := io.ReadFull(rand.Reader, rid[:]); err != nil {
		return "", false, fmt.Errorf("random store id: %w", err)
	}
	ks.ID = hex.EncodeToString(rid[:])
	kek := make([]byte, KEKSize)
	defer clear(kek)
	if _, err := io.ReadFull(rand.Reader, kek); err != nil {
		return "", false, fmt.Errorf("random key: %w", err)
	}
	// A source that does not work is not available: these failures are
	// ErrNoUnattendedSource, so the caller falls back (with its warning)
	// instead of refusing to store the secret at all.
	sc, err := sealKEKWithSystemdCreds(ks.ID, kek, mode)
	if err != nil {
		return "", false, fmt.Errorf("%w: sealing with systemd-creds (%s) failed: %v", ErrNoUnattendedSource, mode, err)
	}
	back, err := openKEKWithSystemdCreds(ks.ID, sc)
	if err != nil {
		return "", false, fmt.Errorf("%w: the key sealed with systemd-creds (%s) does not open again: %v", ErrNoUnattendedSource, mode, err)
	}
	same := bytes.Equal(back, kek)
	clear(back)
	if !same {
		return "", false, fmt.Errorf("%w: systemd-creds (%s) returned another key than it sealed", ErrNoUnattendedSource, mode)
	}
	ks.SystemdCreds = sc
	id, dek, err := newDataKey()
	if err != nil {
		return "", false, err
	}
	defer clear(dek)
	wk, err := wrapKey(kek, ks.ID, id, dek)
	if err != nil {
		return "", false, err
	}
	ks.Current, ks.Keys = wk.ID, []wrappedKey{wk}
	data, err := ks.marshal()
	if err != nil {
		return "", false, err
	}
	path := filepath.Join(dir, FileName)
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return "", false, fmt.Errorf("create keystore %s: %w", path, err)
	}
	if err := createNew(path, data); err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("create keystore %s: %w", path, err)
	}
	return mode, true, nil
}
