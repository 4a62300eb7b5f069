package creddb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"terok.dev/sandbox/common/secretstore"
)

var testKDF = secretstore.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// legacySecret is the API key of the plaintext fixture rows.
const legacySecret = "sk-ant-legacy-0123456789abcdefSECRET"

// legacyDB writes a credentials database the way an older tool does: the
// documented DDL and JSON text in the data column (docs/secrets-at-rest.md,
// Compatibility), through a plain SQLite connection, not through DB.
func legacyDB(t testing.TB, dir string, rows map[[2]string]string) string {
	t.Helper()
	path := filepath.Join(dir, "credentials.db")
	x, err := sqlx.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := x.Exec(Schema); err != nil {
		t.Fatal(err)
	}
	for k, data := range rows {
		if _, err := x.Exec(`INSERT INTO credentials (credential_set, provider, data) VALUES (?, ?, ?)`, k[0], k[1], data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.Exec(`INSERT INTO proxy_tokens VALUES ('terok-p-0123456789abcdef0123456789abcdef', 'proj', 'task1', 'default', 'claude')`); err != nil {
		t.Fatal(err)
	}
	return path
}

// unlockedVault creates a keystore in dir and returns its vault with the
// KEK given directly (no keyring involved).
func unlockedVault(t testing.TB, dir string) *secretstore.Vault {
	t.Helper()
	_, kek, err := secretstore.Create(dir, []byte("test passphrase"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	return secretstore.OpenVaultWithKEK(dir, kek)
}

func rawData(t *testing.T, db *DB, set, provider string) string {
	t.Helper()
	var s string
	if err := db.x.Get(&s, `SELECT data FROM credentials WHERE credential_set = ? AND provider = ?`, set, provider); err != nil {
		t.Fatal(err)
	}
	return s
}

// migrate is what `credentials migrate` does to the database.
func migrate(t *testing.T, db *DB) int {
	t.Helper()
	b, err := db.Vault().Exclusive()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	n, err := db.RewriteAll(context.Background(), func(key CredentialKey, v []byte) ([]byte, bool, error) {
		return b.Reseal(v, secretstore.CredentialAD(key))
	})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := db.Compact(context.Background()); err != nil || !ok {
		t.Fatalf("compact: %v %v", ok, err)
	}
	return n
}

func TestLegacyPlaintextKeepsWorkingAndMigrates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := legacyDB(t, dir, map[[2]string]string{
		{"default", "claude"}: `{"type": "api_key", "key": "` + legacySecret + `"}`,
		{"default", "gh"}:     `{"type":"oauth","access_token":"gho_legacyTOKEN123","refresh_token":"ghr_legacyREFRESH456","expires_at":1.7e9}`,
	})
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetVault(unlockedVault(t, dir))

	// Plaintext rows are read as they are, by every read path.
	c, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"})
	if err != nil || c.String("key") != legacySecret {
		t.Fatalf("load legacy: %v %v", c, err)
	}
	res := db.NewResolver()
	defer res.Close()
	_, c, err = res.Resolve(ctx, "terok-p-0123456789abcdef0123456789abcdef")
	if err != nil || c.String("key") != legacySecret {
		t.Fatalf("resolve legacy: %v", err)
	}

	// The next write of a row seals it.
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{"type": "api_key", "key": legacySecret}); err != nil {
		t.Fatal(err)
	}
	if v := rawData(t, db, "default", "claude"); !strings.HasPrefix(v, "terok-enc:v1:") || strings.Contains(v, legacySecret) {
		t.Fatalf("stored value is not sealed: %.30q", v)
	}
	_, c, err = res.Resolve(ctx, "terok-p-0123456789abcdef0123456789abcdef")
	if err != nil || c.String("key") != legacySecret {
		t.Fatalf("resolve sealed: %v", err)
	}

	// Migrate seals the rest; nothing of any secret is left in the files.
	if n := migrate(t, db); n != 1 {
		t.Fatalf("migrate changed %d rows, want 1 (the other was sealed already)", n)
	}
	c, err = db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "gh"})
	if err != nil || c.String("refresh_token") != "ghr_legacyREFRESH456" {
		t.Fatalf("load migrated: %v", err)
	}
	if n, _ := c.Number("expires_at"); n != 1.7e9 {
		t.Fatalf("number member changed: %v", c["expires_at"])
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{legacySecret, "gho_legacyTOKEN123", "ghr_legacyREFRESH456"} {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("%s still contains %s after migrate", filepath.Base(f), secret[:8])
			}
		}
	}
	// A second migrate has nothing to do.
	if n := migrate(t, db); n != 0 {
		t.Fatalf("second migrate changed %d rows", n)
	}
}

// openSealed is a database in a temporary directory with an unlocked
// vault beside it, closed when the test ends.
func openSealed(t *testing.T) *DB {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(filepath.Join(dir, "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetVault(unlockedVault(t, dir))
	return db
}

func TestSealedValueErrors(t *testing.T) {
	ctx := context.Background()
	db := openSealed(t)
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{"type": "api_key", "key": legacySecret}); err != nil {
		t.Fatal(err)
	}
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "openai"}, Credential{"type": "api_key", "key": "sk-other"}); err != nil {
		t.Fatal(err)
	}
	sealedClaude := rawData(t, db, "default", "claude")

	t.Run("value moved to another row", func(t *testing.T) {
		if _, err := db.x.Exec(`UPDATE credentials SET data = ? WHERE provider = 'openai'`, sealedClaude); err != nil {
			t.Fatal(err)
		}
		_, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "openai"})
		if !errors.Is(err, secretstore.ErrOpen) || strings.Contains(err.Error(), legacySecret) {
			t.Fatalf("moved value: %v", err)
		}
		rows, err := db.AllCredentials(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Provider == "openai" && (r.Err == nil || r.Data != "") {
				t.Fatalf("AllCredentials opened a moved value: %+v", r)
			}
			if r.Provider == "claude" && (r.Err != nil || !strings.Contains(r.Data, legacySecret)) {
				t.Fatalf("AllCredentials: %+v", r.Err)
			}
		}
	})
	t.Run("corrupt ciphertext", func(t *testing.T) {
		bad := sealedClaude[:len(sealedClaude)-4] + "AAAA"
		if _, err := db.x.Exec(`UPDATE credentials SET data = ? WHERE provider = 'openai'`, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "openai"}); !errors.Is(err, secretstore.ErrOpen) {
			t.Fatalf("corrupt value: %v", err)
		}
	})
	t.Run("rewrite aborts whole on one bad row", func(t *testing.T) {
		b, err := db.Vault().Exclusive()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		before := rawData(t, db, "default", "claude")
		_, err = db.RewriteAll(ctx, func(key CredentialKey, v []byte) ([]byte, bool, error) {
			return b.Reseal(v, secretstore.CredentialAD(key))
		})
		if err == nil || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("rewrite with a corrupt row: %v", err)
		}
		if rawData(t, db, "default", "claude") != before {
			t.Fatal("a failed rewrite changed a row")
		}
	})
	t.Run("another handle without the key", func(t *testing.T) {
		// Open attaches the directory's keystore; its KEK is not cached.
		other, err := Open(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}); !errors.Is(err, secretstore.ErrLocked) {
			t.Fatalf("sealed value, locked: %v", err)
		}
		if err := other.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "x"}, Credential{"key": "plain?"}); !errors.Is(err, secretstore.ErrLocked) {
			t.Fatalf("a handle that was not given the key wrote into the encrypted store: %v", err)
		}
		other.SetVault(nil)
		if _, err := other.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}); !errors.Is(err, secretstore.ErrNoKeystore) {
			t.Fatalf("sealed value without vault: %v", err)
		}
	})
}

func TestLockedStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := legacyDB(t, dir, map[[2]string]string{{"default", "plain"}: `{"type":"api_key","key":"sk-plain"}`})
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetVault(unlockedVault(t, dir))
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{"type": "api_key", "key": legacySecret}); err != nil {
		t.Fatal(err)
	}
	// A fresh process without a cached key: locked.
	db.SetVault(secretstore.OpenVault(dir))
	if st := db.Vault().State(); st != secretstore.Locked {
		t.Fatalf("state %v", st)
	}
	if _, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}); !errors.Is(err, secretstore.ErrLocked) {
		t.Fatalf("load while locked: %v", err)
	}
	if c, err := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "plain"}); err != nil || c.String("key") != "sk-plain" {
		t.Fatalf("plaintext row while locked: %v", err)
	}
	err = db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "new"}, Credential{"type": "api_key", "key": "sk-new"})
	if !errors.Is(err, secretstore.ErrLocked) {
		t.Fatalf("store while locked: %v", err)
	}
	if ok, err := db.UpdateCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{}, Credential{"key": "x"}); ok || !errors.Is(err, secretstore.ErrLocked) {
		t.Fatalf("update while locked: %v %v", ok, err)
	}
	if names, _ := db.ListCredentials(ctx, "default"); len(names) != 2 {
		t.Fatalf("a refused write changed the table: %v", names)
	}
}

func TestUpdateCredentialSealed(t *testing.T) {
	ctx := context.Background()
	db := openSealed(t)
	old := Credential{"type": "oauth", "access_token": "at-1", "refresh_token": "rt-1"}
	if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "gh"}, old); err != nil {
		t.Fatal(err)
	}
	cur, _ := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "gh"})
	ok, err := db.UpdateCredential(ctx, CredentialKey{Set: "default", Provider: "gh"}, cur, Credential{"type": "oauth", "access_token": "at-2", "refresh_token": "rt-2"})
	if err != nil || !ok {
		t.Fatalf("update: %v %v", ok, err)
	}
	if v := rawData(t, db, "default", "gh"); !strings.HasPrefix(v, secretstore.Prefix) || strings.Contains(v, "at-2") {
		t.Fatal("update wrote plaintext")
	}
	if c, _ := db.LoadCredential(ctx, CredentialKey{Set: "default", Provider: "gh"}); c.String("access_token") != "at-2" {
		t.Fatalf("after update: %v", c)
	}
}

// BenchmarkResolveSealedVsPlain measures the proxy's per-request lookup with
// a plaintext and an encrypted store in one run: the Resolver opens a
// sealed value once per database change, so the two should match.
func BenchmarkResolveSealedVsPlain(b *testing.B) {
	ctx := context.Background()
	for _, mode := range []string{"plaintext", "sealed"} {
		b.Run(mode, func(b *testing.B) {
			dir := b.TempDir()
			path := legacyDB(b, dir, map[[2]string]string{{"default", "claude"}: `{"type":"api_key","key":"` + legacySecret + `"}`})
			db, err := Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if mode == "sealed" {
				db.SetVault(unlockedVault(b, dir))
				if err := db.StoreCredential(ctx, CredentialKey{Set: "default", Provider: "claude"}, Credential{"type": "api_key", "key": legacySecret}); err != nil {
					b.Fatal(err)
				}
			}
			res := db.NewResolver()
			defer res.Close()
			b.ReportAllocs()
			for b.Loop() {
				if _, c, err := res.Resolve(ctx, "terok-p-0123456789abcdef0123456789abcdef"); err != nil || c == nil {
					b.Fatal(err)
				}
			}
		})
	}
}
