package creddb

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/names"
	"testing"
	"time"

	"terok.dev/sandbox/common/quota"
)

// A token's quota (docs/formats.md, Credentials database): stored in
// token_quota (NULL for a limit not set), returned by LookupToken and both
// Resolve paths with the usage last written, usage added in deltas, the
// row removed with the task's tokens; a malformed row is ErrBadQuota with
// the rest of the TokenInfo (the proxy refuses the token); a negative
// limit is refused at creation.
func TestTokenQuota(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "credentials.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.StoreCredential(ctx, CredentialKey{Set: DefaultSet, Provider: "claude"}, Credential{"type": "api_key", "key": "k"}); err != nil {
		t.Fatal(err)
	}
	limited, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude",
		Quota: quota.Limits{MaxRequests: 5}})
	if err != nil {
		t.Fatal(err)
	}
	open, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude"})
	if err != nil {
		t.Fatal(err)
	}
	var nullBytes bool
	if err := db.x.Get(&nullBytes, `SELECT max_response_bytes IS NULL FROM token_quota WHERE token = ?`, limited); err != nil || !nullBytes {
		t.Fatalf("max_response_bytes not NULL: %v", err)
	}
	gone, err := db.AddUsage(ctx, []UsageDelta{{Token: limited, Requests: 2, Bytes: 100}, {Token: "terok-p-gone", Requests: 1}}, time.Unix(1700000000, 0))
	if err != nil || len(gone) != 1 || gone[0] != "terok-p-gone" {
		t.Fatalf("AddUsage gone = %v, %v", gone, err)
	}
	if _, err := db.AddUsage(ctx, []UsageDelta{{Token: limited, Requests: 1, Bytes: 5}}, time.Unix(1700000001, 0)); err != nil {
		t.Fatal(err)
	}
	want := quota.State{Limits: quota.Limits{MaxRequests: 5}, UsedRequests: 3, UsedBytes: 105, UpdatedAt: 1700000001}
	res := db.NewResolver()
	defer res.Close()
	for name, get := range map[string]func(string) (TokenInfo, error){
		"LookupToken": func(tok string) (TokenInfo, error) { return db.LookupToken(ctx, tok) },
		"DB.Resolve": func(tok string) (TokenInfo, error) {
			ti, _, err := db.Resolve(ctx, tok)
			return ti, err
		},
		"Resolver": func(tok string) (TokenInfo, error) {
			ti, _, err := res.Resolve(ctx, tok)
			return ti, err
		},
	} {
		ti, err := get(limited)
		if err != nil || ti.Quota == nil || *ti.Quota != want {
			t.Errorf("%s(limited) quota = %+v, %v; want %+v", name, ti.Quota, err, want)
		}
		if ti, err := get(open); err != nil || ti.Quota != nil {
			t.Errorf("%s(open) quota = %+v, %v", name, ti.Quota, err)
		}
	}
	rows, err := db.QuotaRows(ctx)
	if err != nil || len(rows) != 1 || rows[0].Token != limited || rows[0].State != want || rows[0].Err != nil {
		t.Fatalf("QuotaRows = %+v, %v", rows, err)
	}

	// Malformed rows, as another tool might write them.
	for _, bad := range []string{
		`UPDATE token_quota SET max_requests = 0`,
		`UPDATE token_quota SET max_requests = -3`,
		`UPDATE token_quota SET max_requests = 'ten'`,
		`UPDATE token_quota SET max_requests = NULL, max_response_bytes = NULL`,
		`UPDATE token_quota SET used_requests = -1`,
		`UPDATE token_quota SET max_requests = 2.5`,
	} {
		if _, err := db.x.Exec(`UPDATE token_quota SET max_requests = 5, max_response_bytes = NULL, used_requests = 0`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.x.Exec(bad); err != nil {
			t.Fatal(err)
		}
		ti, err := db.LookupToken(ctx, limited)
		if !errors.Is(err, ErrBadQuota) || ti.Provider != "claude" {
			t.Errorf("%s: LookupToken = %+v, %v; want ErrBadQuota with the token's info", bad, ti, err)
		}
		if ti, _, err := db.Resolve(ctx, limited); !errors.Is(err, ErrBadQuota) || ti.Provider != "claude" {
			t.Errorf("%s: Resolve = %v", bad, err)
		}
		if ti, _, err := res.Resolve(ctx, limited); !errors.Is(err, ErrBadQuota) || ti.Provider != "claude" {
			t.Errorf("%s: Resolver = %v", bad, err)
		}
		if rows, err := db.QuotaRows(ctx); err != nil || len(rows) != 1 || !errors.Is(rows[0].Err, ErrBadQuota) {
			t.Errorf("%s: QuotaRows = %+v, %v", bad, rows, err)
		}
	}

	if _, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: "claude",
		Quota: quota.Limits{MaxResponseBytes: -1}}); err == nil {
		t.Error("negative limit accepted")
	}
	if _, err := db.CreateToken(ctx, TokenSpec{Project: "p", Task: "t", Set: DefaultSet, Provider: SSHProvider,
		Quota: quota.Limits{MaxRequests: 5}}); err == nil || !strings.Contains(err.Error(), "SSH agent does not enforce quotas") {
		t.Errorf("quota on an SSH token: %v", err)
	}
	if n, err := db.RevokeTokens(ctx, names.TaskRef{Project: "p", Task: "t"}); err != nil || n != 2 {
		t.Fatalf("revoke = %d, %v", n, err)
	}
	var left int
	if err := db.x.Get(&left, `SELECT count(*) FROM token_quota`); err != nil || left != 0 {
		t.Errorf("token_quota rows after revoke: %d, %v", left, err)
	}
}
