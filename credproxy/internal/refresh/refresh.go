// Package refresh keeps OAuth credentials fresh in the background
// (docs/credential-proxy.md, Design): one pass at startup, then one per interval;
// a credential close to expiry is refreshed at its route's token endpoint
// and stored back with compare-and-swap, keeping every other member.
package refresh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/credproxy/internal/routes"
)

// Fixed values (docs/credential-proxy.md, Design).
const (
	DefaultInterval  = 300 * time.Second
	ExpiryBuffer     = 600 * time.Second
	RequestTimeout   = 15 * time.Second
	DefaultExpiresIn = 28800
	maxLoggedBody    = 200
	maxResponseBody  = 1 << 20
)

// Row is one stored credential with its data text (opened when it was
// sealed, docs/secrets-at-rest.md).
type Row struct {
	Set, Provider string
	Data          string
	// Err is why a sealed value could not be opened (Data is then "").
	Err error
}

// Store is what a pass reads and writes.
type Store interface {
	// Rows returns every credentials row of every set.
	Rows(ctx context.Context) ([]Row, error)
	UpdateCredential(ctx context.Context, key creddb.CredentialKey, old, next creddb.Credential) (bool, error)
}

// Refresher runs the refresh passes. Create it with New.
type Refresher struct {
	store    Store
	routes   routes.Table
	log      *slog.Logger
	client   *http.Client
	interval time.Duration
	now      func() time.Time
	onDone   func(set, provider string, err error)

	mu       sync.Mutex
	inflight map[[2]string]bool
}

// Options configure a Refresher; zero values take the spec defaults.
type Options struct {
	Store    Store
	Routes   routes.Table
	Log      *slog.Logger
	Client   *http.Client
	Interval time.Duration
	Now      func() time.Time
	// OnRefresh, when set, is told of every refresh attempt that reached
	// the token endpoint or the store: err nil when the new token was
	// stored (the audit record, docs/audit.md, Channel proxy).
	OnRefresh func(set, provider string, err error)
}

// New builds a Refresher.
func New(o Options) *Refresher {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	c := *o.Client
	c.Timeout = RequestTimeout
	// A refresh token must never follow a redirect to another host.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Refresher{store: o.Store, routes: o.Routes, log: o.Log, client: &c,
		interval: o.Interval, now: o.Now, onDone: o.OnRefresh, inflight: map[[2]string]bool{}}
}

// Run does a pass now and then every interval until ctx ends.
func (r *Refresher) Run(ctx context.Context) {
	if !r.anyRefreshRoute() {
		r.log.Debug("No route has oauth_refresh; background OAuth refresh is idle")
		return
	}
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("OAuth refresh pass failed; will retry at the next interval", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Refresher) anyRefreshRoute() bool {
	for _, rt := range r.routes {
		if rt.Refresh != nil {
			return true
		}
	}
	return false
}

// Pass refreshes every eligible credential once. A failure of one
// credential is logged and the pass goes on; the returned error is only for
// a pass that could not read the database.
func (r *Refresher) Pass(ctx context.Context) error {
	rows, err := r.store.Rows(ctx)
	if err != nil {
		return fmt.Errorf("read credentials: %w", err)
	}
	for _, row := range rows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if row.Err != nil {
			r.log.Warn("Skipping credential that cannot be decrypted: "+row.Err.Error(),
				"provider", row.Provider, "credential_set", row.Set)
			continue
		}
		c, err := creddb.DecodeCredential([]byte(row.Data))
		if err != nil {
			r.log.Warn("Skipping credential whose data is not a JSON object; store it again",
				"provider", row.Provider, "credential_set", row.Set)
			continue
		}
		if t, _ := c["type"].(string); t != "oauth" || c.String("refresh_token") == "" {
			continue
		}
		rt, ok := r.routes[row.Provider]
		if !ok || rt.Refresh == nil {
			continue
		}
		if exp, ok := c.Number("expires_at"); ok && exp > 0 &&
			float64(r.now().UnixNano())/1e9 < exp-ExpiryBuffer.Seconds() {
			continue
		}
		stored, err := r.refreshOne(ctx, row.Set, row.Provider, c, rt.Refresh)
		if r.onDone != nil && (stored || err != nil) {
			r.onDone(row.Set, row.Provider, err)
		}
		if err != nil {
			r.log.Error(err.Error()+"; the stored credential is unchanged, log in again if this persists",
				"provider", row.Provider, "credential_set", row.Set)
		}
	}
	return nil
}

// refreshOne refreshes one credential unless a refresh of it is running.
func (r *Refresher) refreshOne(ctx context.Context, set, provider string, old creddb.Credential, cfg *routes.OAuthRefresh) (stored bool, err error) {
	key := [2]string{set, provider}
	r.mu.Lock()
	if r.inflight[key] {
		r.mu.Unlock()
		return false, nil
	}
	r.inflight[key] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.inflight, key)
		r.mu.Unlock()
	}()

	refreshTok := old.String("refresh_token")
	payload := map[string]string{
		"grant_type":    "refresh_token",
		"refresh_token": refreshTok,
		"client_id":     cfg.ClientID,
	}
	if cfg.HasScope {
		payload["scope"] = cfg.Scope
	}
	if cfg.HasSecret {
		payload["client_secret"] = cfg.ClientSecret
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return false, failuref("Token refresh failed: encode request: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, cfg.TokenURL, bytes.NewReader(body))
	if err != nil {
		return false, failuref("Token refresh failed: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap() // drop the URL from the message
		}
		return false, failuref("Token refresh failed: %v", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return false, failuref("Token refresh failed (%d): read response: %v", resp.StatusCode, err)
	}
	secrets := []string{refreshTok, old.String("access_token"), cfg.ClientSecret}
	if resp.StatusCode != http.StatusOK {
		return false, failuref("Token refresh failed (%d): %s", resp.StatusCode, safeSnippet(respBody, secrets))
	}
	dec := json.NewDecoder(bytes.NewReader(respBody))
	dec.UseNumber()
	var got map[string]any
	if err := dec.Decode(&got); err != nil || got == nil {
		return false, failuref("Token refresh failed (200): response is not a JSON object")
	}
	access, _ := got["access_token"].(string)
	if access == "" {
		return false, failuref("Token refresh failed (200): response has no access_token")
	}
	expiresIn := float64(DefaultExpiresIn)
	switch v := got["expires_in"].(type) {
	case json.Number:
		if f, err := v.Float64(); err == nil && f > 0 {
			expiresIn = f
		}
	}
	next := make(creddb.Credential, len(old))
	for k, v := range old {
		next[k] = v
	}
	next["access_token"] = access
	if rt, ok := got["refresh_token"].(string); ok && rt != "" {
		next["refresh_token"] = rt
	}
	exp := float64(r.now().Unix()) + expiresIn
	next["expires_at"] = json.Number(strconv.FormatFloat(exp, 'f', -1, 64))
	updated, err := r.store.UpdateCredential(ctx, creddb.CredentialKey{Set: set, Provider: provider}, old, next)
	if err != nil {
		return false, failuref("Token refresh succeeded but storing it failed: %w", err)
	}
	if !updated {
		r.log.Info("OAuth credential changed while refreshing; keeping the newer stored one",
			"provider", provider, "credential_set", set)
		return false, nil
	}
	r.log.Info(fmt.Sprintf("Refreshed OAuth token for %s (expires in %ds)", provider, int64(expiresIn)),
		"credential_set", set)
	return true, nil
}

// safeSnippet is a response body fit for a log line: truncated, valid
// UTF-8, without any of the known secrets.
func safeSnippet(b []byte, secrets []string) string {
	s := string(b)
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	if len(s) > maxLoggedBody {
		s = s[:maxLoggedBody]
		for !utf8.ValidString(s) && len(s) > 0 {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// DBStore adapts the credentials database.
type DBStore struct{ DB *creddb.DB }

// Rows implements Store.
func (s DBStore) Rows(ctx context.Context) ([]Row, error) {
	rows, err := s.DB.AllCredentials(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Row, len(rows))
	for i, r := range rows {
		out[i] = Row{Set: r.Set, Provider: r.Provider, Data: r.Data, Err: r.Err}
	}
	return out, nil
}

// UpdateCredential implements Store.
func (s DBStore) UpdateCredential(ctx context.Context, key creddb.CredentialKey, old, next creddb.Credential) (bool, error) {
	return s.DB.UpdateCredential(ctx, key, old, next)
}

// failure is a refresh failure worded as the spec's log message.
type failure struct {
	msg string
	err error
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.err }

func failuref(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &failure{msg: err.Error(), err: errors.Unwrap(err)}
}
