package creddb

import (
	"context"
	"fmt"
	"time"

	"terok.dev/sandbox/common/quota"
)

// QuotaRow is one token_quota row for the proxy's start: the token, its
// state, or why the row is unusable (Err wraps ErrBadQuota).
type QuotaRow struct {
	Token string
	State quota.State
	Err   error
}

// QuotaRows returns every token_quota row, ordered by token, each checked
// with quota.Check (docs/formats.md, Credentials database). A row that
// fails the check is returned with Err set, so the caller can name it.
func (d *DB) QuotaRows(ctx context.Context) ([]QuotaRow, error) {
	rows, err := d.x.QueryxContext(ctx, `SELECT token AS q_token, max_requests, max_response_bytes, used_requests, used_bytes, updated_at
		FROM token_quota ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("read token quotas: %w", err)
	}
	defer rows.Close()
	var out []QuotaRow
	for rows.Next() {
		var q quotaRow
		if err := rows.StructScan(&q); err != nil {
			return nil, fmt.Errorf("read token quotas: %w", err)
		}
		tok, _ := q.Token.(string)
		if b, ok := q.Token.([]byte); ok {
			tok = string(b)
		}
		r := QuotaRow{Token: tok}
		if st, err := q.decode(); err != nil {
			r.Err = err
		} else {
			r.State = *st
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read token quotas: %w", err)
	}
	return out, nil
}

// UsageDelta is usage counted since the last write, for one token.
type UsageDelta struct {
	Token           string
	Requests, Bytes int64
}

// AddUsage adds every delta to its token's row in one transaction (all or
// none) and stamps updated_at with now. Deltas rather than totals, so two
// writers never undo each other's counts. It returns the tokens whose row
// is gone (revoked), which the caller stops counting.
func (d *DB) AddUsage(ctx context.Context, deltas []UsageDelta, now time.Time) (gone []string, err error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	tx, err := d.x.BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("write token usage: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PreparexContext(ctx, `UPDATE token_quota SET used_requests = used_requests + ?,
		used_bytes = used_bytes + ?, updated_at = ? WHERE token = ?`)
	if err != nil {
		return nil, fmt.Errorf("write token usage: %w", err)
	}
	defer stmt.Close()
	for _, u := range deltas {
		res, err := stmt.ExecContext(ctx, u.Requests, u.Bytes, now.Unix(), u.Token)
		if err != nil {
			return nil, fmt.Errorf("write token usage: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			gone = append(gone, u.Token)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("write token usage: %w", err)
	}
	return gone, nil
}
