package secretstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/names"
)

// credAD is the CredentialAD of the row set/provider.
func credAD(set, provider string) AD {
	return CredentialAD(names.CredentialKey{Set: set, Provider: provider})
}

// testKDF keeps the tests fast; real keystores use DefaultKDF.
var testKDF = KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// newStore creates a keystore in a fresh directory, caches its KEK in the
// kernel keyring and drops the cache when the test ends.
func newStore(t *testing.T) (dir, storeID string, kek []byte) {
	t.Helper()
	dir = t.TempDir()
	storeID, kek, err := Create(dir, []byte("correct horse battery"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := CacheKEK(storeID, kek, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ForgetKEK(storeID) })
	return dir, storeID, kek
}

func seal(t *testing.T, v *Vault, plain string, ad AD) []byte {
	t.Helper()
	w, err := v.BeginWrite()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if !w.Sealing() {
		t.Fatal("writer does not seal with an unlocked keystore")
	}
	out, err := w.Encode([]byte(plain), ad)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSealOpenRoundTripAndBinding(t *testing.T) {
	dir, _, _ := newStore(t)
	v := OpenVault(dir)
	if st := v.State(); st != Unlocked {
		t.Fatalf("state %v, want unlocked", st)
	}
	secret := "sk-live-0123456789abcdef"
	val := seal(t, v, secret, credAD("default", "claude"))
	if !IsSealed(val) || !strings.HasPrefix(string(val), "terok-enc:v1:") {
		t.Fatalf("value %q lacks the versioned prefix", val)
	}
	if bytes.Contains(val, []byte(secret)) {
		t.Fatal("sealed value contains the secret")
	}
	got, err := v.Open(val, credAD("default", "claude"))
	if err != nil || string(got) != secret {
		t.Fatalf("open: %q, %v", got, err)
	}
	// Two seals of one secret differ (random nonces).
	if bytes.Equal(val, seal(t, v, secret, credAD("default", "claude"))) {
		t.Error("two seals of one value are identical")
	}
	for _, tc := range []struct {
		name string
		ad   AD
	}{
		{"other provider", credAD("default", "openai")},
		{"other set", credAD("work", "claude")},
		{"split moved", credAD("defaultc", "laude")},
		{"key file", KeyFileAD("/default/claude")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Open(val, tc.ad)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("open under another binding: %v, want ErrOpen", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatal("error text contains the secret")
			}
		})
	}
}

func TestCorruptValues(t *testing.T) {
	dir, _, _ := newStore(t)
	v := OpenVault(dir)
	ad := KeyFileAD("/k/id_ed25519")
	val := seal(t, v, "PRIVATE KEY MATERIAL", ad)
	flip := func(i int) []byte {
		b := append([]byte(nil), val...)
		c := b[i]
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return b
	}
	tests := []struct {
		name  string
		value []byte
		want  error
	}{
		{"flipped body byte", flip(len(val) - 5), ErrOpen},
		{"flipped key id", flip(len(prefixV1) + 1), ErrUnknownKey},
		{"truncated", val[:len(prefixV1)+20], ErrFormat},
		{"bad base64", append(append([]byte(nil), val[:len(val)-3]...), '!', '!', '!'), ErrFormat},
		{"future version", []byte("terok-enc:v9:AAAA"), ErrFormat},
		{"no version", []byte("terok-enc:"), ErrFormat},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Open(tc.value, ad)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatal("error text contains the secret")
			}
		})
	}
	// A key file's trailing newline is not part of the value.
	if _, err := v.Open(append(append([]byte(nil), val...), '\n'), ad); err != nil {
		t.Fatalf("value with newline: %v", err)
	}
}

func TestStates(t *testing.T) {
	t.Run("no keystore is plaintext mode", func(t *testing.T) {
		v := OpenVault(t.TempDir())
		if v.State() != NoKeystore || v.Ready() != nil {
			t.Fatalf("state %v ready %v", v.State(), v.Ready())
		}
		w, err := v.BeginWrite()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if out, _ := w.Encode([]byte("x"), credAD("a", "b")); w.Sealing() || string(out) != "x" {
			t.Fatal("plaintext mode sealed a value")
		}
		if _, err := v.Open([]byte("terok-enc:v1:"+strings.Repeat("A", 80)), credAD("a", "b")); !errors.Is(err, ErrNoKeystore) {
			t.Fatalf("open without keystore: %v", err)
		}
	})
	t.Run("locked refuses to write and to start", func(t *testing.T) {
		dir, id, _ := newStore(t)
		val := seal(t, OpenVault(dir), "s3cret-value", credAD("a", "b"))
		if ok, err := ForgetKEK(id); !ok || err != nil {
			t.Fatalf("forget: %v %v", ok, err)
		}
		v := OpenVault(dir)
		if v.State() != Locked {
			t.Fatalf("state %v, want locked", v.State())
		}
		err := v.Ready()
		if err == nil || !strings.Contains(err.Error(), "credentials unlock") {
			t.Fatalf("ready: %v", err)
		}
		if _, err := v.BeginWrite(); !errors.Is(err, ErrLocked) {
			t.Fatalf("write while locked: %v", err)
		}
		if _, err := v.Open(val, credAD("a", "b")); !errors.Is(err, ErrLocked) {
			t.Fatalf("open while locked: %v", err)
		}
	})
	t.Run("a running process keeps its key after lock", func(t *testing.T) {
		dir, id, _ := newStore(t)
		v := OpenVault(dir)
		val := seal(t, v, "s3cret-value", credAD("a", "b"))
		_, _ = ForgetKEK(id)
		if got, err := v.Open(val, credAD("a", "b")); err != nil || string(got) != "s3cret-value" {
			t.Fatalf("open after lock: %q %v", got, err)
		}
	})
	t.Run("unreadable keystore", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, FileName), []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		v := OpenVault(dir)
		if v.State() != Broken || v.Ready() == nil {
			t.Fatalf("state %v", v.State())
		}
		if _, err := v.BeginWrite(); err == nil {
			t.Fatal("write with a broken keystore succeeded")
		}
	})
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Create(dir, []byte("short"), testKDF); err == nil {
		t.Fatal("short passphrase accepted")
	}
	id, kek, err := Create(dir, []byte("the right passphrase"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Create(dir, []byte("another passphrase"), testKDF); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second create: %v", err)
	}
	id2, kek2, err := Unlock(dir, []byte("the right passphrase"))
	if err != nil || id2 != id || !bytes.Equal(kek, kek2) {
		t.Fatalf("unlock: %v", err)
	}
	_, _, err = Unlock(dir, []byte("the wrong passphrase"))
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if strings.Contains(err.Error(), "wrong passphrase:") && strings.Contains(err.Error(), "the wrong passphrase") {
		t.Fatal("error echoes the passphrase")
	}
	if _, _, err := Unlock(t.TempDir(), []byte("whatever123")); !errors.Is(err, ErrNoKeystore) {
		t.Fatalf("unlock without keystore: %v", err)
	}
	// The keystore never holds the passphrase or the KEK.
	data, _ := os.ReadFile(filepath.Join(dir, FileName))
	if bytes.Contains(data, []byte("the right passphrase")) || bytes.Contains(data, kek) {
		t.Fatal("keystore contains the passphrase or the KEK")
	}
	if fi, _ := os.Stat(filepath.Join(dir, FileName)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore mode %v", fi.Mode())
	}
}

func TestKeystoreParserRejectsTampering(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Create(dir, []byte("the right passphrase"), testKDF); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	for _, tc := range []struct{ name, from, to string }{
		{"huge memory", `"memory_kib": 8192`, `"memory_kib": 999999999`},
		{"zero time", `"time": 1`, `"time": 0`},
		{"other kdf", `"argon2id"`, `"scrypt"`},
		{"future version", `"version": 1`, `"version": 2`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(string(good), tc.from, tc.to, 1)
			if bad == string(good) {
				t.Fatalf("fixture does not contain %s", tc.from)
			}
			if _, err := parseKeystore([]byte(bad)); err == nil {
				t.Fatal("tampered keystore accepted")
			}
		})
	}
}

func TestKeyringCache(t *testing.T) {
	if err := KeyringStatus(); err != nil {
		t.Fatal(err)
	}
	id := "00112233445566778899aabbccddeeff"
	kek := bytes.Repeat([]byte{7}, KEKSize)
	if err := CacheKEK(id, kek, time.Hour); err != nil {
		t.Fatal(err)
	}
	defer ForgetKEK(id)
	got, err := CachedKEK(id)
	if err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("cached: %v", err)
	}
	if ok, err := ForgetKEK(id); !ok || err != nil {
		t.Fatalf("forget: %v %v", ok, err)
	}
	if _, err := CachedKEK(id); !errors.Is(err, errNotCached) {
		t.Fatalf("after forget: %v", err)
	}
	if ok, err := ForgetKEK(id); ok || err != nil {
		t.Fatalf("second forget: %v %v", ok, err)
	}
}

// TestRotationCrashLeavesEverythingReadable stops a rotation after each of
// its durable steps (the crash points) and checks every value still opens
// with the keystore on disk, then that a resumed rotation completes.
func TestRotationCrashLeavesEverythingReadable(t *testing.T) {
	dir, _, _ := newStore(t)
	v := OpenVault(dir)
	ads := []AD{credAD("default", "a"), credAD("default", "b"), KeyFileAD("/k/1")}
	vals := make([][]byte, len(ads))
	for i, ad := range ads {
		vals[i] = seal(t, v, "secret-"+string(rune('0'+i)), ad)
	}
	checkAll := func(stage string) {
		t.Helper()
		fresh := OpenVault(dir) // what a restarted process sees
		for i, ad := range ads {
			got, err := fresh.Open(vals[i], ad)
			if err != nil || string(got) != "secret-"+string(rune('0'+i)) {
				t.Fatalf("%s: value %d: %q %v", stage, i, got, err)
			}
		}
	}
	// Crash after the new key was added.
	b, err := v.Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	old := b.CurrentKey()
	if err := b.StartRotation(); err != nil {
		t.Fatal(err)
	}
	newKey := b.CurrentKey()
	if newKey == old {
		t.Fatal("rotation kept the key")
	}
	// Crash after part of the values were re-sealed.
	out, changed, err := b.Reseal(vals[0], ads[0])
	if err != nil || !changed {
		t.Fatalf("reseal: %v %v", changed, err)
	}
	vals[0] = out
	b.Close()
	checkAll("half-way")
	if k, _ := KeyOf(vals[0]); k != newKey {
		t.Fatal("resealed value not under the new key")
	}
	// Resume: the same new key is kept, the rest is re-sealed, old dropped.
	b, err = OpenVault(dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if !b.Rotating() {
		t.Fatal("unfinished rotation not detected")
	}
	if err := b.StartRotation(); err != nil || b.CurrentKey() != newKey {
		t.Fatalf("resume picked another key: %v", err)
	}
	for i := range vals {
		out, _, err := b.Reseal(vals[i], ads[i])
		if err != nil {
			t.Fatal(err)
		}
		vals[i] = out
	}
	if err := b.FinishRotation(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	checkAll("finished")
	if n := OpenVault(dir).KeyCount(); n != 1 {
		t.Fatalf("%d keys after rotation", n)
	}
	// The old key is gone: a value sealed with it no longer opens.
	if _, err := OpenVault(dir).Open(sealed{key: old, nonce: make([]byte, 24), ct: make([]byte, 20)}.format(), ads[0]); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old key still present: %v", err)
	}
}

// TestWriterBlocksRotation: a rotation waits for a write in progress, so no
// value is written under a key the rotation then drops.
func TestWriterBlocksRotation(t *testing.T) {
	dir, _, _ := newStore(t)
	v := OpenVault(dir)
	w, err := v.BeginWrite()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b, err := OpenVault(dir).Exclusive()
		if err != nil {
			t.Error(err)
			return
		}
		b.Close()
	}()
	select {
	case <-done:
		t.Fatal("exclusive hold taken while a writer holds the lock")
	case <-time.After(200 * time.Millisecond):
	}
	w.Close()
	<-done
}

func FuzzParseSealed(f *testing.F) {
	f.Add([]byte("terok-enc:v1:" + strings.Repeat("A", 64)))
	f.Add([]byte("terok-enc:v2:AAAA"))
	f.Add([]byte("terok-enc:"))
	f.Add([]byte(`{"type":"api_key","key":"x"}`))
	f.Add([]byte("terok-enc:v1:" + strings.Repeat("_", 70) + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := parseSealed(in)
		if err != nil {
			return
		}
		if len(s.nonce) != 24 || len(s.ct) < 16 {
			t.Fatalf("accepted a short value: %d %d", len(s.nonce), len(s.ct))
		}
		again, err := parseSealed(s.format())
		if err != nil || again.key != s.key || !bytes.Equal(again.ct, s.ct) {
			t.Fatalf("re-format does not round-trip: %v", err)
		}
	})
}

func FuzzParseKeystore(f *testing.F) {
	dir := f.TempDir()
	if _, _, err := Create(dir, []byte("fuzz passphrase"), testKDF); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, FileName))
	f.Add(good)
	f.Add([]byte("{}"))
	// An unattended keystore: no kdf, a systemd_creds entry.
	f.Add([]byte(`{"format":"terok-sandbox-keystore","version":1,"id":"0123456789abcdef0123456789abcdef",` +
		`"current":"0011223344556677","keys":[{"id":"0011223344556677","wrapped":"AAAA"}],"systemd_creds":{"with_key":"host","blob":"QUJD"}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		ks, err := parseKeystore(in)
		if err != nil {
			return
		}
		if ks.KDF != nil && ks.KDF.check() != nil {
			t.Fatal("accepted out-of-range KDF parameters")
		}
		if ks.KDF == nil && ks.SystemdCreds == nil {
			t.Fatal("accepted a keystore nothing can open")
		}
	})
}

func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	id, kek, err := Create(dir, []byte("bench passphrase"), testKDF)
	if err != nil {
		b.Fatal(err)
	}
	_ = id
	v := OpenVaultWithKEK(dir, kek)
	w, _ := v.BeginWrite()
	val, _ := w.Encode([]byte(`{"type":"api_key","key":"sk-0123456789abcdef0123456789abcdef"}`), credAD("default", "claude"))
	w.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Open(val, credAD("default", "claude")); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeyringFoundFromAnotherSession runs this test binary again as a
// child in a new session keyring of its own, as a daemon started by
// systemd (KeyringMode=private) or sudo is: running as the same UID, it
// must still find the KEK the operator's session cached.
func TestKeyringFoundFromAnotherSession(t *testing.T) {
	if id := os.Getenv("TEROK_TEST_KEYRING_CHILD"); id != "" {
		if _, err := unix.KeyctlJoinSessionKeyring("terok-test-daemon"); err != nil {
			fmt.Println("join:", err)
			os.Exit(3)
		}
		kek, err := CachedKEK(id)
		if err != nil {
			fmt.Println("not readable:", err)
			os.Exit(1)
		}
		fmt.Printf("read %d bytes\n", len(kek))
		os.Exit(0)
	}
	_, id, _ := newStore(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestKeyringFoundFromAnotherSession$")
	cmd.Env = append(os.Environ(), "TEROK_TEST_KEYRING_CHILD="+id)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("read 32 bytes")) {
		t.Fatalf("a process in another session keyring cannot read the KEK: %v\n%s", err, out)
	}
}

func TestChangePassphrase(t *testing.T) {
	dir, id, _ := newStore(t)
	running := OpenVault(dir) // a daemon started before the change
	ad := credAD("default", "claude")
	val := seal(t, running, "sk-before-change", ad)
	b, err := OpenVault(dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ChangePassphrase([]byte("short"), testKDF); err == nil {
		t.Fatal("short passphrase accepted")
	}
	kek, err := b.ChangePassphrase([]byte("the new passphrase"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, _, err := Unlock(dir, []byte("correct horse battery")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after the change: %v", err)
	}
	if _, k2, err := Unlock(dir, []byte("the new passphrase")); err != nil || !bytes.Equal(k2, kek) {
		t.Fatalf("new passphrase: %v", err)
	}
	if err := CacheKEK(id, kek, 0); err != nil {
		t.Fatal(err)
	}
	// The running vault re-reads the keystore, its old KEK no longer opens
	// it, and it takes the new one from the keyring: values still open.
	if got, err := running.Open(val, ad); err != nil || string(got) != "sk-before-change" {
		t.Fatalf("running vault after the change: %q %v", got, err)
	}
	if got, err := OpenVault(dir).Open(val, ad); err != nil || string(got) != "sk-before-change" {
		t.Fatalf("fresh vault after the change: %q %v", got, err)
	}
}
