package secretsctl

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/mattn/go-sqlite3"
	"golang.org/x/crypto/ssh"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/common/sshkeys"
)

var testKDF = secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

const passphrase = "operator passphrase"

// fixture is a store in the older plaintext layout, written the way an
// older tool writes it (docs/secrets-at-rest.md, Compatibility): raw SQL
// with JSON text in the data column, an ssh-keys.json and OpenSSH private
// key files.
type fixture struct {
	Store
	secrets  []string // every secret byte string in the fixture
	keyPaths []string
	pubs     [][]byte
}

func legacyFixture(t testing.TB, nCreds, nKeys int) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{Store: Store{Dir: dir, DBPath: filepath.Join(dir, "credentials.db"),
		KeysJSON: filepath.Join(dir, "ssh-keys.json"), Encrypt: true}}
	x, err := sqlx.Open("sqlite3", "file:"+f.DBPath+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Exec(creddb.Schema); err != nil {
		t.Fatal(err)
	}
	tx := x.MustBegin()
	for i := range nCreds {
		secret := fmt.Sprintf("sk-legacy-%06d-SECRETVALUE", i)
		if i < 50 || i%100 == 0 { // scanning for every one is slow; a sample
			f.secrets = append(f.secrets, secret)
		}
		tx.MustExec(`INSERT INTO credentials VALUES (?, ?, ?)`, "default", fmt.Sprintf("prov%04d", i),
			`{"type": "api_key", "key": "`+secret+`"}`)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	x.Close()
	keysDir := filepath.Join(dir, "ssh-keys", "proj")
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var entries []map[string]string
	for i := range nKeys {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		block, err := ssh.MarshalPrivateKey(priv, "tk-side:proj:k")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(keysDir, fmt.Sprintf("id_ed25519_key-%d", i))
		pemText := pem.EncodeToMemory(block)
		if err := os.WriteFile(p, pemText, 0o600); err != nil {
			t.Fatal(err)
		}
		sp, _ := ssh.NewPublicKey(pub)
		if err := os.WriteFile(p+".pub", ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
			t.Fatal(err)
		}
		// The base64 body of the OpenSSH key is the secret to look for.
		f.secrets = append(f.secrets, strings.Split(string(pemText), "\n")[2])
		f.keyPaths = append(f.keyPaths, p)
		f.pubs = append(f.pubs, sp.Marshal())
		entries = append(entries, map[string]string{"private_key": p, "public_key": p + ".pub"})
	}
	data, _ := json.Marshal(map[string]any{"proj": entries})
	if err := os.WriteFile(f.KeysJSON, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) unlock(t testing.TB) {
	t.Helper()
	if _, err := f.Unlock([]byte(passphrase), 0, testKDF); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = f.Lock() })
}

// checkReadable opens every value with a fresh vault (what a restarted
// daemon sees) and checks it is the original.
func (f fixture) checkReadable(t *testing.T, stage string) {
	t.Helper()
	v := secretstore.OpenVault(f.Dir)
	db, err := creddb.Open(f.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetVault(v)
	rows, err := db.AllCredentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Err != nil || !strings.Contains(r.Data, "SECRETVALUE") {
			t.Fatalf("%s: credential %s unreadable: %v", stage, r.Provider, r.Err)
		}
	}
	for i, p := range f.keyPaths {
		plain, err := sshkeys.ReadPrivateKey(v, p)
		if err != nil {
			t.Fatalf("%s: key %s: %v", stage, p, err)
		}
		signer, err := ssh.ParsePrivateKey(plain)
		if err != nil || !bytes.Equal(signer.PublicKey().Marshal(), f.pubs[i]) {
			t.Fatalf("%s: key %s does not parse back: %v", stage, p, err)
		}
	}
}

// scan is `strings` over the database, its WAL and the key files: no
// secret of the fixture may appear.
func (f fixture) scan(t *testing.T) {
	t.Helper()
	files := append([]string{f.DBPath, f.DBPath + "-wal", f.DBPath + "-shm"}, f.keyPaths...)
	for _, p := range files {
		data, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range f.secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s still contains a secret (%.12s…)", filepath.Base(p), s)
			}
		}
	}
}

func TestMigrateLegacyLayout(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 20, 2)
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "plaintext" || st.Credentials.Plaintext != 20 || st.KeyFiles.Plaintext != 2 || !st.Problem {
		t.Fatalf("status before: %+v", st)
	}
	if _, err := f.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "credentials unlock") {
		t.Fatalf("migrate without keystore: %v", err)
	}
	f.unlock(t)
	f.checkReadable(t, "plaintext, unlocked")
	res, err := f.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Credentials != 20 || res.KeyFiles != 2 || !res.WALClean {
		t.Fatalf("migrate: %+v", res)
	}
	f.checkReadable(t, "migrated")
	f.scan(t)
	st, _ = f.Status(ctx)
	if st.Mode != "encrypted" || st.Credentials.Sealed != 20 || st.KeyFiles.Sealed != 2 || st.Problem {
		t.Fatalf("status after: %+v", st)
	}
	for _, p := range f.keyPaths {
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", p, fi.Mode())
		}
	}
	// Idempotent.
	if res, err := f.Migrate(ctx); err != nil || res.Credentials+res.KeyFiles != 0 {
		t.Fatalf("second migrate: %+v %v", res, err)
	}
}

func TestLockedAndWrongPassphrase(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 3, 1)
	f.unlock(t)
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Lock(); !ok || err != nil {
		t.Fatalf("lock: %v %v", ok, err)
	}
	st, _ := f.Status(ctx)
	if st.State != secretstore.Locked.String() || !st.Problem || !strings.Contains(strings.Join(st.Next, "\n"), "credentials unlock") {
		t.Fatalf("status while locked: %+v", st)
	}
	for name, run := range map[string]func(context.Context) (Result, error){"migrate": f.Migrate, "rotate-key": f.RotateKey} {
		if _, err := run(ctx); !errors.Is(err, secretstore.ErrLocked) {
			t.Fatalf("%s while locked: %v", name, err)
		}
	}
	if _, err := f.Unlock([]byte("not the passphrase"), 0, testKDF); !errors.Is(err, secretstore.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if st, _ := f.Status(ctx); st.State != secretstore.Locked.String() {
		t.Fatal("a wrong passphrase unlocked the store")
	}
	f.unlock(t)
	f.checkReadable(t, "unlocked again")
}

func TestRotateKey(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 10, 2)
	f.unlock(t)
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	before := keyIDs(t, f)
	res, err := f.RotateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Rotated || res.Credentials != 10 || res.KeyFiles != 2 {
		t.Fatalf("rotate: %+v", res)
	}
	after := keyIDs(t, f)
	if len(after) != 1 || len(before) != 1 || after[0] == before[0] {
		t.Fatalf("keys before %v after %v", before, after)
	}
	if n := secretstore.OpenVault(f.Dir).KeyCount(); n != 1 {
		t.Fatalf("%d data keys after rotation", n)
	}
	f.checkReadable(t, "rotated")
	f.scan(t)
}

// TestRotateKeyCrashHalfWay runs a rotation's steps by hand and stops after
// each durable one, as a crash would: every value stays readable with the
// keystore on disk, and rotate-key then finishes the job.
func TestRotateKeyCrashHalfWay(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 10, 3)
	f.unlock(t)
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := secretstore.OpenVault(f.Dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.StartRotation(); err != nil {
		t.Fatal(err)
	}
	b.Close() // crash 1: new key added, nothing re-sealed
	f.checkReadable(t, "after the new key was added")

	b, err = secretstore.OpenVault(f.Dir).Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	db, err := creddb.Open(f.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RewriteAll(ctx, func(key creddb.CredentialKey, v []byte) ([]byte, bool, error) {
		return b.Reseal(v, secretstore.CredentialAD(key))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := sshkeys.RewriteKeyFile(f.keyPaths[0], func(v []byte) ([]byte, bool, error) {
		return b.Reseal(v, secretstore.KeyFileAD(f.keyPaths[0]))
	}); err != nil {
		t.Fatal(err)
	}
	b.Close() // crash 2: database and one key file under the new key, two under the old
	f.checkReadable(t, "half-way through the key files")
	if ids := keyIDs(t, f); len(ids) != 2 {
		t.Fatalf("expected values under two keys half-way, got %v", ids)
	}
	st, _ := f.Status(ctx)
	if st.DataKeys != 2 || !strings.Contains(strings.Join(st.Next, "\n"), "rotate-key") {
		t.Fatalf("status does not report the unfinished rotation: %+v", st)
	}

	if _, err := f.RotateKey(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := keyIDs(t, f); len(ids) != 1 {
		t.Fatalf("after resume values are under %v", ids)
	}
	if n := secretstore.OpenVault(f.Dir).KeyCount(); n != 1 {
		t.Fatalf("%d keys after resume", n)
	}
	f.checkReadable(t, "resumed")
}

func TestMigrateBackToPlaintext(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 5, 2)
	f.unlock(t)
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	f.Encrypt = false
	st, _ := f.Status(ctx)
	if !st.Problem || !strings.Contains(st.Why, "credentials_encryption = false") {
		t.Fatalf("status with false and a keystore: %+v", st)
	}
	if _, err := f.RotateKey(ctx); err == nil {
		t.Fatal("rotate-key with encryption off succeeded")
	}
	res, err := f.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Removed || res.Credentials != 5 || res.KeyFiles != 2 {
		t.Fatalf("migrate back: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(f.Dir, secretstore.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("keystore not removed")
	}
	// An older tool reads it again: plain JSON and PEM.
	x, _ := sqlx.Open("sqlite3", "file:"+f.DBPath)
	defer x.Close()
	var data string
	if err := x.Get(&data, `SELECT data FROM credentials WHERE provider = 'prov0000'`); err != nil || !strings.HasPrefix(data, "{") {
		t.Fatalf("row after migrate back: %.20q %v", data, err)
	}
	for _, p := range f.keyPaths {
		b, _ := os.ReadFile(p)
		if _, err := ssh.ParsePrivateKey(b); err != nil {
			t.Fatalf("key file after migrate back: %v", err)
		}
	}
	st, _ = f.Status(ctx)
	if st.Mode != "plaintext" || st.Problem {
		t.Fatalf("final status: %+v", st)
	}
	if _, err := f.Unlock([]byte(passphrase), 0, testKDF); err == nil {
		t.Fatal("unlock created a keystore with encryption off")
	}
}

// keyIDs is the set of data keys the sealed values name.
func keyIDs(t *testing.T, f fixture) []string {
	t.Helper()
	set := map[string]bool{}
	db, err := creddb.Open(f.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, _ := db.RawCredentials(context.Background())
	vals := [][]byte{}
	for _, r := range rows {
		vals = append(vals, []byte(r.Data))
	}
	for _, p := range f.keyPaths {
		b, _ := os.ReadFile(p)
		vals = append(vals, b)
	}
	for _, v := range vals {
		id, err := secretstore.KeyOf(v)
		if err != nil {
			t.Fatalf("value not sealed: %v", err)
		}
		set[id.String()] = true
	}
	var out []string
	for id := range set {
		out = append(out, id)
	}
	return out
}

// BenchmarkMigrate1000 is `credentials migrate` of 1,000 plaintext
// credentials (and one key file): sealing, one transaction, compaction.
func BenchmarkMigrate1000(b *testing.B) {
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := legacyFixture(b, 1000, 1)
		f.unlock(b)
		b.StartTimer()
		res, err := f.Migrate(ctx)
		if err != nil || res.Credentials != 1000 {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

func TestRotateKeyWithNewPassphrase(t *testing.T) {
	ctx := context.Background()
	f := legacyFixture(t, 4, 1)
	f.unlock(t)
	if _, err := f.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := f.Rotate(ctx, []byte("a brand new passphrase"), testKDF)
	if err != nil || !res.Rotated || !res.PassphraseChanged {
		t.Fatalf("rotate with new passphrase: %+v %v", res, err)
	}
	f.checkReadable(t, "after the passphrase change") // the keyring holds the new KEK
	if _, err := f.Lock(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Unlock([]byte(passphrase), 0, testKDF); !errors.Is(err, secretstore.ErrWrongPassphrase) {
		t.Fatalf("old passphrase still opens the keystore: %v", err)
	}
	if _, err := f.Unlock([]byte("a brand new passphrase"), 0, testKDF); err != nil {
		t.Fatal(err)
	}
	f.checkReadable(t, "unlocked with the new passphrase")
}
