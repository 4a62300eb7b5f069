package secretstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// systemd credentials as a KEK source (docs/secrets-at-rest.md, Key
// sources): `credentials unlock --systemd-creds=MODE` seals the KEK with
// `systemd-creds encrypt` (TPM2 where MODE asks for it, else the host key
// /var/lib/systemd/credential.secret, readable by root only) and keeps the
// result in the keystore. A later unlock, and a daemon that finds no cached
// KEK, open it with `systemd-creds decrypt` without a passphrase. It works
// without systemd as PID 1; $SYSTEMD_CREDENTIAL_SECRET (systemd's own
// variable) points the host key elsewhere, which the tests use.

// SystemdCredsModes are the --with-key values accepted.
var systemdCredsModes = map[string]bool{"host": true, "tpm2": true, "host+tpm2": true, "auto": true}

// systemdCredsTimeout bounds one systemd-creds run (a TPM can be slow).
const systemdCredsTimeout = 30 * time.Second

// systemdCreds is the keystore's sealed copy of the KEK.
type systemdCreds struct {
	WithKey string `json:"with_key"`
	Blob    string `json:"blob"` // base64 of systemd-creds' binary output
}

// credName binds the sealed KEK to this keystore: systemd-creds refuses to
// decrypt a credential under another name.
func credName(storeID string) string { return "terok-sandbox-kek-" + storeID }

// runSystemdCreds runs systemd-creds with stdin and returns stdout; its
// stderr becomes the error (it never carries the secret: the secret goes
// through the pipes only).
func runSystemdCreds(stdin []byte, args ...string) ([]byte, error) {
	path, err := exec.LookPath("systemd-creds")
	if err != nil {
		return nil, errors.New("systemd-creds is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdCredsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(lastLine(errb.String()))
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("systemd-creds %s: %s", args[0], msg)
	}
	return out.Bytes(), nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func sealKEKWithSystemdCreds(storeID string, kek []byte, mode string) (*systemdCreds, error) {
	if !systemdCredsModes[mode] {
		return nil, fmt.Errorf("systemd-creds mode %q: use host, tpm2, host+tpm2 or auto", mode)
	}
	blob, err := runSystemdCreds(kek, "encrypt", "--name="+credName(storeID), "--with-key="+mode, "-", "-")
	if err != nil {
		if mode != "tpm2" && mode != "host+tpm2" && strings.Contains(err.Error(), "ermission denied") {
			err = fmt.Errorf("%w (the host key needs root; use a passphrase only)", err)
		}
		return nil, err
	}
	return &systemdCreds{WithKey: mode, Blob: base64.StdEncoding.EncodeToString(blob)}, nil
}

func openKEKWithSystemdCreds(storeID string, sc *systemdCreds) ([]byte, error) {
	blob, err := base64.StdEncoding.DecodeString(sc.Blob)
	if err != nil {
		return nil, errors.New("keystore systemd_creds blob is not base64")
	}
	kek, err := runSystemdCreds(blob, "decrypt", "--name="+credName(storeID), "-", "-")
	if err != nil {
		return nil, err
	}
	if len(kek) != KEKSize {
		clear(kek)
		return nil, fmt.Errorf("systemd-creds returned %d bytes, not a %d-byte key", len(kek), KEKSize)
	}
	return kek, nil
}

// EnrollSystemdCreds seals the KEK with systemd-creds in mode and keeps it
// in the keystore (replaced atomically), so unlock needs no passphrase on
// this host. mode "" removes the enrollment.
func (b *Batch) EnrollSystemdCreds(mode string) error {
	next := *b.ks
	if mode == "" {
		if !b.ks.hasPassphrase() {
			return errors.New("the keystore has no passphrase: without the systemd-creds enrollment nothing could open it; " +
				"add one first with 'terok-sandbox credentials rotate-key --new-passphrase'")
		}
		next.SystemdCreds = nil
	} else {
		sc, err := sealKEKWithSystemdCreds(b.ks.ID, b.kek, mode)
		if err != nil {
			return err
		}
		// Prove it opens before relying on it.
		kek, err := openKEKWithSystemdCreds(b.ks.ID, sc)
		if err != nil {
			return fmt.Errorf("the sealed key does not open again: %w", err)
		}
		same := bytes.Equal(kek, b.kek)
		clear(kek)
		if !same {
			return errors.New("systemd-creds returned another key than it sealed")
		}
		next.SystemdCreds = sc
	}
	if err := writeKeystore(b.v.path, &next); err != nil {
		return err
	}
	b.ks = &next
	return nil
}

// SystemdCredsMode is the enrolled systemd-creds mode ("" when none).
func (v *Vault) SystemdCredsMode() string {
	if v == nil {
		return ""
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ks == nil || v.ks.SystemdCreds == nil {
		return ""
	}
	return v.ks.SystemdCreds.WithKey
}

// HasPassphrase reports whether a passphrase opens the keystore (false
// for one created unattended until a passphrase is added, and without a
// readable keystore).
func (v *Vault) HasPassphrase() bool {
	if v == nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ks != nil && v.ks.hasPassphrase()
}

// UnlockWithSystemdCreds opens the KEK of the keystore in dir with
// systemd-creds (no passphrase); errNoSystemdCreds when it is not enrolled.
func UnlockWithSystemdCreds(dir string) (storeID string, kek []byte, err error) {
	ks, err := readKeystore(dirKeystore(dir))
	if err != nil {
		return "", nil, err
	}
	if ks.SystemdCreds == nil {
		return "", nil, ErrNoSystemdCreds
	}
	kek, err = openKEKWithSystemdCreds(ks.ID, ks.SystemdCreds)
	if err != nil {
		return "", nil, err
	}
	if _, err := ks.unwrapKeys(kek); err != nil {
		clear(kek)
		return "", nil, fmt.Errorf("the key systemd-creds returned does not open the keystore: %w", err)
	}
	return ks.ID, kek, nil
}

// ErrNoSystemdCreds: the keystore has no systemd-creds enrollment.
var ErrNoSystemdCreds = errors.New("no systemd-creds enrollment in the keystore")
