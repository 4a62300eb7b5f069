// Package secretsctl is the operator's side of secrets at rest
// (docs/secrets-at-rest.md): status, unlock and lock of the keystore, the
// migration of every credential value and private key file to the mode in
// force, and data-key rotation. The formats and the vault live in
// common/secretstore; this package walks the stores.
package secretsctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

// Store is one configuration's secrets: the credentials database, the SSH
// key map and the keystore beside them.
type Store struct {
	Dir      string // credentials directory (keystore)
	DBPath   string
	KeysJSON string
	// Encrypt is credentials_encryption: the mode the operator wants.
	Encrypt bool
}

// FromConfig returns the store of cfg.
func FromConfig(cfg config.Config) Store {
	return Store{Dir: cfg.CredentialsDir, DBPath: cfg.CredentialsDB(), KeysJSON: cfg.SSHKeysJSON(),
		Encrypt: cfg.CredentialsEncryption}
}

// Counts is how many values of one kind are in which form.
type Counts struct {
	Sealed    int `json:"sealed"`
	Plaintext int `json:"plaintext"`
	Missing   int `json:"missing,omitempty"` // key files listed but absent
}

// Source is one KEK source and whether this host has it.
type Source struct {
	Name   string `json:"name"`
	Usable bool   `json:"usable"`
	Detail string `json:"detail"`
}

// Status is `credentials status` and the doctor check.
type Status struct {
	Mode        string   `json:"mode"` // "encrypted" or "plaintext"
	Why         string   `json:"why"`
	Config      bool     `json:"credentials_encryption"`
	Keystore    string   `json:"keystore"`
	State       string   `json:"state"`
	StateError  string   `json:"state_error,omitempty"`
	DataKeys    int      `json:"data_keys"`
	Sources     []Source `json:"key_sources"`
	Credentials Counts   `json:"credentials"`
	KeyFiles    Counts   `json:"key_files"`
	// Next is what the operator should run, most important first.
	Next []string `json:"next,omitempty"`
	// Problem is set when the state needs action (doctor warns).
	Problem bool `json:"problem"`
}

// Status reports the mode in force, why, the key sources and how many
// values are sealed.
func (s Store) Status(ctx context.Context) (Status, error) {
	v := secretstore.OpenVault(s.Dir)
	st := Status{Config: s.Encrypt, Keystore: v.KeystorePath(), DataKeys: v.KeyCount()}
	state := v.State()
	st.State = state.String()
	if err := v.Err(); err != nil && state == secretstore.Broken {
		st.StateError = err.Error()
	}
	st.Sources = sources(v)
	var err error
	if st.Credentials, err = s.countCredentials(ctx); err != nil {
		return st, err
	}
	st.KeyFiles = s.countKeyFiles()
	sealed := st.Credentials.Sealed + st.KeyFiles.Sealed
	plain := st.Credentials.Plaintext + st.KeyFiles.Plaintext
	switch {
	case state == secretstore.NoKeystore && s.Encrypt:
		st.Mode = "plaintext"
		if mode, why := secretstore.UnattendedSource(); mode != "" {
			st.Why = fmt.Sprintf("no keystore yet (credentials_encryption is on): the next credential or SSH key stored creates one sealed by systemd-creds (%s), no passphrase needed", mode)
			if plain > 0 {
				st.Next = append(st.Next, fmt.Sprintf("terok-sandbox credentials migrate  # creates it now and encrypts the %d existing values", plain))
			}
		} else {
			st.Why = "no keystore yet (credentials_encryption is on) and no key source without a passphrase: " + why
			st.Next = append(st.Next, "terok-sandbox credentials unlock   # choose a passphrase; creates the keystore")
			if plain > 0 {
				st.Next = append(st.Next, "terok-sandbox credentials migrate  # then encrypt the existing values")
			}
		}
		st.Problem = plain > 0
	case state == secretstore.NoKeystore:
		st.Mode = "plaintext"
		st.Why = "credentials_encryption = false in the config (for hosts that still run the older plaintext-only daemons)"
	case !s.Encrypt:
		st.Mode = "encrypted"
		st.Why = "credentials_encryption = false in the config, but a keystore still exists: new values are still sealed"
		st.Next = append(st.Next, "terok-sandbox credentials migrate  # decrypt everything and remove the keystore")
		st.Problem = true
	default:
		st.Mode = "encrypted"
		st.Why = "a keystore exists and credentials_encryption is on"
		if m := v.SystemdCredsMode(); m != "" && !v.HasPassphrase() {
			st.Why += fmt.Sprintf("; its key is sealed by systemd-creds (%s) only, created without a passphrase", m)
			st.Next = append(st.Next, "terok-sandbox credentials rotate-key --new-passphrase  # optional: a recovery passphrase for when this host's key is lost")
		}
	}
	if state == secretstore.Locked {
		st.Next = append([]string{"terok-sandbox credentials unlock   # the daemons refuse to start while locked"}, st.Next...)
		st.Problem = true
	}
	if state == secretstore.Broken {
		st.Next = append(st.Next, "restore "+secretstore.FileName+" from a backup (sealed values cannot be read without it)")
		st.Problem = true
	}
	if state == secretstore.Unlocked && s.Encrypt && plain > 0 {
		st.Next = append(st.Next, fmt.Sprintf("terok-sandbox credentials migrate  # %d values are still plaintext", plain))
		st.Problem = true
	}
	if st.DataKeys > 1 {
		st.Next = append(st.Next, "terok-sandbox credentials rotate-key  # a rotation was interrupted; this finishes it")
		st.Problem = true
	}
	if state == secretstore.NoKeystore && sealed > 0 {
		st.Next = append(st.Next, fmt.Sprintf("restore %s from a backup: %d sealed values cannot be read without it", secretstore.FileName, sealed))
		st.Problem = true
	}
	return st, nil
}

func sources(v *secretstore.Vault) []Source {
	var out []Source
	sd := Source{Name: "systemd-creds"}
	if p, err := exec.LookPath("systemd-creds"); err != nil {
		sd.Detail = "not installed"
	} else if mode := v.SystemdCredsMode(); mode != "" {
		sd.Usable = true
		sd.Detail = "enrolled (" + mode + "): unlock and the daemons need no passphrase on this host"
	} else if v.StoreID() != "" {
		sd.Usable = true
		sd.Detail = p + " found, not enrolled: 'credentials unlock --systemd-creds=auto' seals the key with it (TPM2 where present, else the host key, root only)"
	} else if mode, why := secretstore.UnattendedSource(); mode != "" {
		sd.Usable = true
		sd.Detail = "usable (" + mode + "): the first secret stored creates the keystore with it"
	} else {
		sd.Detail = p + " found, but " + why
	}
	out = append(out, sd)
	kr := Source{Name: "kernel keyring"}
	if err := secretstore.KeyringStatus(); err != nil {
		kr.Detail = err.Error()
	} else {
		kr.Usable = true
		kr.Detail = "user keyring usable"
		if id := v.StoreID(); id != "" {
			if _, err := secretstore.CachedKEK(id); err == nil {
				kr.Detail = "key cached (unlocked)"
			} else {
				kr.Detail = "no key cached (locked)"
			}
		}
	}
	out = append(out, kr)
	pp := Source{Name: "passphrase", Usable: true, Detail: "not set up"}
	switch {
	case v.HasPassphrase():
		pp.Detail = "set up (Argon2id)"
	case v.StoreID() != "":
		pp.Detail = "none: the keystore was created unattended; 'credentials rotate-key --new-passphrase' adds one"
	}
	return append(out, pp)
}

func (s Store) countCredentials(ctx context.Context) (Counts, error) {
	var c Counts
	if _, err := os.Stat(s.DBPath); errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	db, err := creddb.Open(s.DBPath)
	if err != nil {
		return c, err
	}
	defer db.Close()
	rows, err := db.RawCredentials(ctx)
	if err != nil {
		return c, err
	}
	for _, r := range rows {
		if secretstore.IsSealed([]byte(r.Data)) {
			c.Sealed++
		} else {
			c.Plaintext++
		}
	}
	return c, nil
}

func (s Store) countKeyFiles() Counts {
	var c Counts
	m, _ := sshkeys.Read(s.KeysJSON)
	for _, p := range m.PrivateKeyPaths() {
		data, err := os.ReadFile(p)
		switch {
		case err != nil:
			c.Missing++
		case secretstore.IsSealed(data):
			c.Sealed++
		default:
			c.Plaintext++
		}
	}
	return c
}

// Unlock opens (or, when there is none and encryption is on, creates) the
// keystore with passphrase and caches its KEK in the kernel keyring for
// timeout (0: until lock or reboot). It reports whether it created it.
func (s Store) Unlock(passphrase []byte, timeout time.Duration, params secretstore.KDFParams) (created bool, err error) {
	return s.UnlockWith(passphrase, UnlockOptions{Timeout: timeout, KDF: params})
}

// UnlockOptions are the choices of `credentials unlock`.
type UnlockOptions struct {
	Timeout time.Duration // 0: until lock or reboot
	KDF     secretstore.KDFParams
	// SystemdCreds enrolls the KEK with systemd-creds in this mode (host,
	// tpm2, host+tpm2, auto); "off" removes an enrollment; "" keeps it.
	SystemdCreds string
}

// UnlockWith is Unlock with options; a nil passphrase unlocks through the
// keystore's systemd-creds enrollment.
func (s Store) UnlockWith(passphrase []byte, o UnlockOptions) (created bool, err error) {
	timeout, params := o.Timeout, o.KDF
	if passphrase == nil {
		id, kek, err := secretstore.UnlockWithSystemdCreds(s.Dir)
		if err != nil {
			return false, err
		}
		defer clear(kek)
		return false, secretstore.CacheKEK(id, kek, timeout)
	}
	var id string
	var kek []byte
	_, statErr := os.Stat(filepath.Join(s.Dir, secretstore.FileName))
	if errors.Is(statErr, os.ErrNotExist) {
		if !s.Encrypt {
			return false, errors.New("credentials_encryption = false in the config: no keystore is created and the store stays plaintext; remove the key (or set it to true) to encrypt")
		}
		id, kek, err = secretstore.Create(s.Dir, passphrase, params)
		created = true
	} else {
		id, kek, err = secretstore.Unlock(s.Dir, passphrase)
	}
	if err != nil {
		return false, err
	}
	defer clear(kek)
	if o.SystemdCreds != "" {
		b, err := secretstore.OpenVaultWithKEK(s.Dir, kek).Exclusive()
		if err != nil {
			return created, err
		}
		mode := o.SystemdCreds
		if mode == "off" {
			mode = ""
		}
		err = b.EnrollSystemdCreds(mode)
		b.Close()
		if err != nil {
			return created, fmt.Errorf("unlocked, but not enrolled with systemd-creds: %w", err)
		}
	}
	if err := secretstore.CacheKEK(id, kek, timeout); err != nil {
		return created, err
	}
	return created, nil
}

// Setup is what EnsureEncrypted did before a secret is written.
type Setup struct {
	// Created: a keystore was created, sealed by systemd-creds in Mode.
	Created bool
	Mode    string
	// Migrated is the migration of the values already stored (Created only).
	Migrated Result
	// Plaintext: encryption is on but no source works without a passphrase,
	// so the secret is written in plaintext; Warning says what to run.
	Plaintext bool
	Warning   string
}

// EnsureEncrypted is called by the runner before it writes a secret (a
// credential, a generated or imported SSH key): with credentials_encryption
// on and no keystore it creates one unattended (secretstore.CreateUnattended)
// and seals the values already stored (Migrate), so a fresh host is
// encrypted from its first secret and an upgraded one does not stay half
// plaintext. Without a source it reports the plaintext write and what to
// run; the caller prints Warning once per command.
func (s Store) EnsureEncrypted(ctx context.Context) (Setup, error) {
	var out Setup
	if !s.Encrypt {
		return out, nil
	}
	if _, err := os.Stat(filepath.Join(s.Dir, secretstore.FileName)); err == nil || !errors.Is(err, os.ErrNotExist) {
		return out, nil // present (or unreadable: the write reports it)
	}
	mode, created, err := secretstore.CreateUnattended(s.Dir)
	if errors.Is(err, secretstore.ErrNoUnattendedSource) {
		out.Plaintext = true
		out.Warning = fmt.Sprintf("WARNING: this secret is stored in plaintext, NOT encrypted: credentials_encryption is on, but %v. "+
			"Run 'terok-sandbox credentials unlock' to choose a passphrase (it creates the keystore), then 'terok-sandbox credentials migrate'.", err)
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("create the keystore for encryption at rest: %w (or set credentials_encryption = false to store plaintext)", err)
	}
	if !created {
		return out, nil // another process created it first and migrates
	}
	out.Created, out.Mode = true, mode
	if out.Migrated, err = s.Migrate(ctx); err != nil {
		return out, fmt.Errorf("created the keystore %s, but encrypting the values already stored failed (run 'terok-sandbox credentials migrate'): %w",
			filepath.Join(s.Dir, secretstore.FileName), err)
	}
	return out, nil
}

// Lock drops the cached KEK; it reports whether one was cached.
func (s Store) Lock() (bool, error) {
	id := secretstore.OpenVault(s.Dir).StoreID()
	if id == "" {
		return false, nil
	}
	return secretstore.ForgetKEK(id)
}

// Result is what migrate and rotate-key changed.
type Result struct {
	Credentials int  `json:"credentials_rewritten"`
	KeyFiles    int  `json:"key_files_rewritten"`
	Removed     bool `json:"keystore_removed,omitempty"`
	Rotated     bool `json:"rotated,omitempty"`
	// PassphraseChanged: the data keys are wrapped under a new passphrase.
	PassphraseChanged bool `json:"passphrase_changed,omitempty"`
	// WALClean is false when another process kept old WAL frames alive.
	WALClean bool          `json:"wal_clean"`
	Took     time.Duration `json:"took_ns"`
}

// Migrate brings every credential value and private key file to the mode
// in force: sealed with the current key when encryption is on (plaintext
// written by older tools included; an interrupted rotation is finished),
// or back to plaintext with the keystore removed when it is off.
func (s Store) Migrate(ctx context.Context) (Result, error) {
	start := time.Now()
	v := secretstore.OpenVault(s.Dir)
	if v.State() == secretstore.NoKeystore && s.Encrypt {
		if _, _, err := secretstore.CreateUnattended(s.Dir); err != nil {
			if errors.Is(err, secretstore.ErrNoUnattendedSource) {
				return Result{}, fmt.Errorf("there is no keystore yet (%v): run 'terok-sandbox credentials unlock' to choose a passphrase, then migrate", err)
			}
			return Result{}, err
		}
	}
	if v.State() == secretstore.NoKeystore {
		st, err := s.Status(ctx)
		if err != nil {
			return Result{}, err
		}
		if n := st.Credentials.Sealed + st.KeyFiles.Sealed; n > 0 {
			return Result{}, fmt.Errorf("%d values are sealed but there is no keystore: %w", n, secretstore.ErrNoKeystore)
		}
		return Result{WALClean: true, Took: time.Since(start)}, nil // plaintext already
	}
	b, err := v.Exclusive()
	if err != nil {
		return Result{}, err
	}
	defer b.Close()
	change := b.Reseal
	if !s.Encrypt {
		change = b.Unseal
	}
	res, err := s.rewrite(ctx, change)
	if err != nil {
		return res, err
	}
	if s.Encrypt {
		if err := b.FinishRotation(); err != nil {
			return res, err
		}
	} else {
		if err := b.RemoveKeystore(); err != nil {
			return res, err
		}
		res.Removed = true
	}
	res.Took = time.Since(start)
	return res, nil
}

// RotateKey replaces the data key: a new key is added and made current,
// every value is re-sealed under it (the database in one transaction, each
// key file atomically), then the old key is dropped. Each step is durable
// before the next, and the keystore holds both keys until every value is
// re-sealed, so a crash leaves every value readable; running it again
// resumes (docs/secrets-at-rest.md, Rotation).
func (s Store) RotateKey(ctx context.Context) (Result, error) {
	return s.Rotate(ctx, nil, secretstore.KDFParams{})
}

// Rotate is RotateKey, then, with a newPassphrase, the data keys are
// re-wrapped under a KEK derived from it (fresh salt, params) in one
// atomic keystore replace, and the new KEK is cached in the kernel keyring
// (until lock or reboot). A passphrase that leaked needs this: a new data
// key alone would still be wrapped under the old passphrase.
func (s Store) Rotate(ctx context.Context, newPassphrase []byte, params secretstore.KDFParams) (Result, error) {
	start := time.Now()
	if !s.Encrypt {
		return Result{}, errors.New("credentials_encryption = false in the config: there is no key to rotate (run 'terok-sandbox credentials migrate' to finish the move to plaintext)")
	}
	v := secretstore.OpenVault(s.Dir)
	if v.State() == secretstore.NoKeystore {
		return Result{}, errors.New("there is no keystore yet: run 'terok-sandbox credentials unlock' to choose a passphrase first")
	}
	b, err := v.Exclusive()
	if err != nil {
		return Result{}, err
	}
	defer b.Close()
	if err := b.StartRotation(); err != nil {
		return Result{}, err
	}
	res, err := s.rewrite(ctx, b.Reseal)
	if err != nil {
		return res, fmt.Errorf("%w; every value is still readable, run rotate-key again to finish", err)
	}
	if err := b.FinishRotation(); err != nil {
		return res, err
	}
	res.Rotated = true
	if newPassphrase != nil {
		kek, err := b.ChangePassphrase(newPassphrase, params)
		if err != nil {
			return res, fmt.Errorf("the data key was rotated, but the passphrase was not changed: %w", err)
		}
		defer clear(kek)
		res.PassphraseChanged = true
		if err := secretstore.CacheKEK(v.StoreID(), kek, 0); err != nil {
			return res, fmt.Errorf("the passphrase was changed, but caching the new key failed (run 'terok-sandbox credentials unlock' with the new passphrase): %w", err)
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

// rewrite applies change to every credential value (one transaction) and
// every registered private key file, then compacts the database.
func (s Store) rewrite(ctx context.Context, change func([]byte, secretstore.AD) ([]byte, bool, error)) (Result, error) {
	var res Result
	if _, err := os.Stat(s.DBPath); errors.Is(err, os.ErrNotExist) {
		// No database yet (an SSH key is the first secret): nothing to
		// rewrite, and none is created for it.
		res.WALClean = true
		return res, s.rewriteKeyFiles(&res, change)
	}
	db, err := creddb.Open(s.DBPath)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if res.Credentials, err = db.RewriteAll(ctx, func(key creddb.CredentialKey, value []byte) ([]byte, bool, error) {
		return change(value, secretstore.CredentialAD(key))
	}); err != nil {
		return res, err
	}
	if err := s.rewriteKeyFiles(&res, change); err != nil {
		return res, fmt.Errorf("the credentials are done, but the key files are not: %w", err)
	}
	if res.WALClean, err = db.Compact(ctx); err != nil {
		return res, err
	}
	return res, nil
}

// rewriteKeyFiles applies change to every registered private key file,
// each replaced atomically.
func (s Store) rewriteKeyFiles(res *Result, change func([]byte, secretstore.AD) ([]byte, bool, error)) error {
	m, err := sshkeys.Read(s.KeysJSON)
	if err != nil {
		return err
	}
	for _, p := range m.PrivateKeyPaths() {
		changed, err := sshkeys.RewriteKeyFile(p, func(value []byte) ([]byte, bool, error) {
			return change(value, secretstore.KeyFileAD(p))
		})
		if err != nil {
			return err
		}
		if changed {
			res.KeyFiles++
		}
	}
	return nil
}
