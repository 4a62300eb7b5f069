package secretstore

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The KEK cache is a "user" key in the kernel's per-user keyring (@u): the
// operator's processes find it (the runner, and the proxy and agent it
// starts), nothing is written to disk, and it is gone at reboot, after
// `credentials lock`, or when its timeout expires. Task containers must not
// reach it (docs/secrets-at-rest.md, Key sources): rootless ones live in
// another user namespace whose keyrings are separate; rootful ones run as
// the same UID, so their seccomp profile must refuse keyctl, add_key and
// request_key.

// keyringDesc is the cache entry's description; the store id keeps two
// credential directories of one user apart.
func keyringDesc(storeID string) string { return "terok-sandbox:kek:" + storeID }

// keyPerm: possessor everything; the owning UID may view, read and search
// it (and so invalidate it) from processes that do not possess it: a
// daemon started by systemd or sudo in a session keyring of its own must
// find the key the operator's shell cached. Possession would be no
// boundary anyway: any process of the UID that may call keyctl can link
// the user keyring into its session keyring. What keeps task containers
// out is that they cannot call keyctl or live in another user namespace
// (docs/secrets-at-rest.md, Key sources).
const keyPerm = 0x3f000000 | 0x000b0000

// CacheKEK stores kek in the user keyring for storeID, replacing an older
// entry; timeout 0 keeps it until lock or reboot.
func CacheKEK(storeID string, kek []byte, timeout time.Duration) error {
	if timeout < 0 {
		return errors.New("the cache timeout must not be negative")
	}
	id, err := unix.AddKey("user", keyringDesc(storeID), kek, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		return fmt.Errorf("cache the key in the kernel keyring: %w (is keyctl blocked by a seccomp profile?)", err)
	}
	if err := unix.KeyctlSetperm(id, keyPerm); err != nil {
		_, _ = unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
		return fmt.Errorf("set permissions of the cached key: %w", err)
	}
	secs := int((timeout + time.Second - 1) / time.Second)
	if _, err := unix.KeyctlInt(unix.KEYCTL_SET_TIMEOUT, id, secs, 0, 0); err != nil {
		_, _ = unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
		return fmt.Errorf("set the timeout of the cached key: %w", err)
	}
	return nil
}

// errNotCached is CachedKEK's "no entry" (not an error of the keyring).
var errNotCached = errors.New("not cached")

// CachedKEK returns the KEK cached for storeID; errNotCached when there is
// none (never unlocked, locked, or expired).
func CachedKEK(storeID string) ([]byte, error) {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", keyringDesc(storeID), 0)
	if errors.Is(err, unix.ENOKEY) {
		// A hardened daemon runs in a user namespace of its own
		// (PrivateUsers=yes), where @u is a new, empty keyring; its unit's
		// KeyringMode=shared links the user's real @u into its session
		// keyring, so the key is found there (docs/install.md, Hardening of the units).
		id, err = unix.KeyctlSearch(unix.KEY_SPEC_SESSION_KEYRING, "user", keyringDesc(storeID), 0)
	}
	if errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.EKEYEXPIRED) || errors.Is(err, unix.EKEYREVOKED) {
		return nil, errNotCached
	}
	if err != nil {
		return nil, fmt.Errorf("search the kernel keyring: %w", err)
	}
	buf := make([]byte, KEKSize+1)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
	if errors.Is(err, unix.EKEYEXPIRED) || errors.Is(err, unix.EKEYREVOKED) || errors.Is(err, unix.ENOKEY) {
		return nil, errNotCached
	}
	if err != nil {
		return nil, fmt.Errorf("read the cached key: %w", err)
	}
	if n != KEKSize {
		clear(buf)
		return nil, fmt.Errorf("the cached key %q has %d bytes, not %d; run 'terok-sandbox credentials lock' and unlock again", keyringDesc(storeID), n, KEKSize)
	}
	return buf[:KEKSize], nil
}

// ForgetKEK invalidates the cached KEK of storeID; it reports whether one
// was cached.
func ForgetKEK(storeID string) (bool, error) {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", keyringDesc(storeID), 0)
	if errors.Is(err, unix.ENOKEY) || errors.Is(err, unix.EKEYEXPIRED) || errors.Is(err, unix.EKEYREVOKED) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("search the kernel keyring: %w", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0); err != nil {
		return false, fmt.Errorf("drop the cached key: %w", err)
	}
	return true, nil
}

// KeyringStatus says whether the kernel keyring can be used by this
// process (nil) or why not.
func KeyringStatus() error {
	if _, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, true); err != nil {
		return fmt.Errorf("the kernel keyring is not usable: %w", err)
	}
	return nil
}
