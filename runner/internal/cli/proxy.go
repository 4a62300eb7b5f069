package cli

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"terok.dev/sandbox/common/names"
	"text/tabwriter"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/quota"
	"terok.dev/sandbox/common/scope"
	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/common/tokenid"
	"terok.dev/sandbox/runner/daemons"
	"terok.dev/sandbox/systemd"
)

// proxyCommand is `terok-sandbox proxy ...` (docs/credential-proxy.md,
// Operating it) and the phantom token management.
func proxyCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "proxy",
		Usage: "credential proxy: lifecycle and phantom tokens",
		Subcommands: []*ucli.Command{
			proxyStartCommand(d), proxyStopCommand(d), proxyStatusCommand(d),
			proxyInstallCommand(d), proxyUninstallCommand(d), proxyEnsureCommand(d),
			proxyTokenCommand(d),
		},
	}
}

// argsExactly checks the command's positional arguments (flags after them
// were moved in front by reorderArgs).
func argsExactly(c *ucli.Context, names ...string) (*cmdArgs, []string, error) {
	fa := parseArgs(c)
	a := fa.pos
	if len(a) > len(names) {
		return nil, nil, UsageErrorf("unexpected argument %q", a[len(names)])
	}
	if len(a) < len(names) {
		return nil, nil, UsageErrorf("missing argument %s", strings.ToUpper(names[len(a)]))
	}
	return fa, a, nil
}

// withCredDB is the action skeleton of the database commands: the named
// positional arguments, the credentials database of the configuration,
// then fn.
func withCredDB(d Deps, names []string, fn func(c *ucli.Context, fa *cmdArgs, args []string, db *creddb.DB) error) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		fa, a, err := argsExactly(c, names...)
		if err != nil {
			return err
		}
		db, err := openCredDB(c, d)
		if err != nil {
			return err
		}
		defer db.Close()
		return fn(c, fa, a, db)
	}
}

// proxyLogLevels are the credential proxy's --log-level names
// (docs/credential-proxy.md).
func proxyLogLevels() []string { return []string{"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"} }

func proxyStartCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "start",
		Usage: "start the credential proxy as a detached daemon",
		Flags: []ucli.Flag{&ucli.StringFlag{Name: "log-level", Value: "INFO", Usage: "daemon log level: " + strings.Join(proxyLogLevels(), ", ")}},
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, _ config.Config, p *daemons.Proxy) (string, error) {
			// The daemon reads an unknown level as INFO (its compatible
			// behaviour); the CLI refuses it instead of starting a daemon
			// that silently logs otherwise than asked.
			level := strings.ToUpper(c.String("log-level"))
			if !slices.Contains(proxyLogLevels(), level) {
				return "", UsageErrorf("--log-level %q is not one of %s", c.String("log-level"), strings.Join(proxyLogLevels(), ", "))
			}
			st := p.Status(c.Context)
			if st.Running {
				return "Credential proxy is already running.", nil
			}
			if daemons.Mode(st.Mode) == daemons.ModeSystemd {
				return "", fmt.Errorf("the credential proxy's systemd units are installed (it starts on demand through %s); "+
					"not starting a second instance on the same ports. Use 'terok-sandbox proxy install' to reinstall and restart the units "+
					"('terok-sandbox proxy ensure' starts the service now), or 'terok-sandbox proxy uninstall' first to use the manual daemon", systemd.ProxySocketName)
			}
			return "Credential proxy started.", p.Start(c.Context, daemons.ProxyStart{LogLevel: level})
		}),
	}
}

func proxyStopCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "stop",
		Usage: "stop the credential proxy daemon",
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, _ config.Config, p *daemons.Proxy) (string, error) {
			if _, ok := p.DaemonPID(); !ok {
				return "Credential proxy is not running.", nil
			}
			p.Stop()
			return "Credential proxy stopped.", nil
		}),
	}
}

func proxyStatusCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "status",
		Usage: "show whether the credential proxy runs and what it serves",
		Flags: []ucli.Flag{jsonFlag()},
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, _ config.Config, p *daemons.Proxy) (string, error) {
			st := p.Status(c.Context)
			if c.Bool("json") {
				return "", writeJSON(d.Stdout, st)
			}
			state := "stopped"
			if st.Running {
				state = "running"
			}
			fmt.Fprintf(d.Stdout, "Status: %s\nSocket: %s\nDB:     %s\nRoutes: %s (%d configured)\n",
				state, st.SocketPath, st.DBPath, st.RoutesPath, st.RoutesConfigured)
			if len(st.CredentialsStored) == 0 {
				fmt.Fprintln(d.Stdout, "Credentials: none stored")
			} else {
				fmt.Fprintf(d.Stdout, "Credentials: %s\n", strings.Join(st.CredentialsStored, ", "))
			}
			if st.Warning != "" {
				fmt.Fprintf(d.Stderr, "\nWarning: %s\nRun 'terok-sandbox proxy install' to update.\n", st.Warning)
			}
			return "", nil
		}),
	}
}

func proxyInstallCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "install",
		Usage: "install and start the systemd socket units (socket activation)",
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, _ config.Config, p *daemons.Proxy) (string, error) {
			return "Credential proxy systemd socket installed and started.", p.Install(c.Context)
		}),
	}
}

func proxyUninstallCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "uninstall",
		Usage: "stop and remove the systemd units",
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, _ config.Config, p *daemons.Proxy) (string, error) {
			return "Credential proxy systemd units removed.", p.Uninstall(c.Context)
		}),
	}
}

func proxyEnsureCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "ensure",
		Usage: "check that the proxy and its SSH agent port are reachable (starts the systemd service if installed)",
		Action: daemonAction(d, daemons.NewProxy, func(c *ucli.Context, cfg config.Config, p *daemons.Proxy) (string, error) {
			return fmt.Sprintf("Credential proxy is reachable on 127.0.0.1:%d (SSH agent on 127.0.0.1:%d).", cfg.ProxyPort, cfg.SSHAgentPort),
				p.Ensure(c.Context)
		}),
	}
}

func openCredDB(c *ucli.Context, d Deps) (*creddb.DB, error) {
	cfg, err := loadConfig(c, d)
	if err != nil {
		return nil, err
	}
	return creddb.Open(cfg.CredentialsDB())
}

func proxyTokenCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:  "token",
		Usage: "phantom tokens: create, revoke, list",
		Subcommands: []*ucli.Command{
			{
				Name:      "create",
				Usage:     "issue a phantom token for a task and provider (printed once)",
				ArgsUsage: "PROJECT TASK",
				Flags: []ucli.Flag{
					&ucli.StringFlag{Name: "provider", Usage: "provider the token stands for (a routes.json key, or 'ssh')"},
					&ucli.StringFlag{Name: "set", Value: creddb.DefaultSet, Usage: "credential set"},
					tokenTTLFlag(),
					&ucli.GenericFlag{Name: "allow", Value: &listFlag{}, Usage: "narrow the route's scope: 'METHODS PATH', e.g. 'GET /v1/models' or 'GET,POST /v1/messages/**' (repeatable)"},
					&ucli.GenericFlag{Name: "deny", Value: &listFlag{}, Usage: "refuse these requests even when allowed: 'METHODS PATH' (repeatable)"},
					tokenContainerFlag(),
					&ucli.StringFlag{Name: "max-requests", Usage: "quota: the proxy forwards at most N requests with this token, then answers 429 (e.g. --max-requests 1000); default: no limit"},
					&ucli.StringFlag{Name: "max-response-bytes", Usage: "quota: at most SIZE response body bytes (e.g. 50MB, 512KiB, 1048576); the request that crosses it completes, later ones get 429; default: no limit"},
					jsonFlag(),
				},
				Action: projectTaskFirst(withCredDB(d, []string{"project", "task"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					if fa.String("provider") == "" {
						return UsageErrorf("--provider is required (a routes.json key, or 'ssh')")
					}
					expires, err := tokenExpiry(fa)
					if err != nil {
						return err
					}
					allow, err := scopeRules(c, "allow")
					if err != nil {
						return err
					}
					deny, err := scopeRules(c, "deny")
					if err != nil {
						return err
					}
					container, err := containerFlag(fa)
					if err != nil {
						return err
					}
					limits, err := quotaFlags(fa)
					if err != nil {
						return err
					}
					if limits.Set() && fa.String("provider") == creddb.SSHProvider {
						return UsageErrorf("--max-requests/--max-response-bytes: the SSH agent does not enforce quotas; only proxied HTTP requests are counted (e.g. --max-requests 1000 with --provider claude)")
					}
					if err := markStarts(c, d, container); err != nil {
						return err
					}
					tok, err := db.CreateToken(c.Context, creddb.TokenSpec{Project: a[0], Task: a[1], Set: fa.String("set"), Provider: fa.String("provider"),
						Expires: expires, Allow: allow, Deny: deny, Container: container, Quota: limits})
					if err != nil {
						return err
					}
					out := map[string]any{"project": a[0], "task": a[1], "credential_set": fa.String("set"), "provider": fa.String("provider")}
					if len(allow) > 0 {
						out["allow"] = allow
					}
					if len(deny) > 0 {
						out["deny"] = deny
					}
					if limits.Set() {
						out["quota"] = limits
					}
					return printToken(d, fa, tok, expires, container, out)
				})),
			},
			{
				Name:      "revoke",
				Usage:     "revoke every phantom token of a task",
				ArgsUsage: "PROJECT TASK",
				Flags:     []ucli.Flag{jsonFlag()},
				Action: withCredDB(d, []string{"project", "task"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					n, err := db.RevokeTokens(c.Context, names.TaskRef{Project: a[0], Task: a[1]})
					if err != nil {
						return err
					}
					return printRevoked(d, fa.Bool("json"), n, a[0], a[1], "phantom token(s)", "phantom tokens")
				}),
			},
			proxyTokenShowCommand(d),
			{
				Name:  "list",
				Usage: "list phantom tokens (shown only by prefix)",
				Flags: []ucli.Flag{&ucli.StringFlag{Name: "project", Usage: "only this project"}, jsonFlag()},
				Action: withCredDB(d, nil, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					rows, err := db.ListTokens(c.Context, fa.String("project"))
					if err != nil {
						return err
					}
					type row struct {
						Token         string `json:"token"`
						Project       string `json:"project"`
						Task          string `json:"task"`
						CredentialSet string `json:"credential_set"`
						Provider      string `json:"provider"`
					}
					out := make([]row, 0, len(rows))
					for _, r := range rows {
						out = append(out, row{tokenid.Show(r.Token), r.Project, r.Task, r.CredentialSet, r.Provider})
					}
					if fa.Bool("json") {
						return writeJSON(d.Stdout, out)
					}
					if len(out) == 0 {
						fmt.Fprintln(d.Stdout, "No phantom tokens.")
						return nil
					}
					tw := tabwriter.NewWriter(d.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "TOKEN\tPROJECT\tTASK\tSET\tPROVIDER")
					for _, r := range out {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Token, r.Project, r.Task, r.CredentialSet, r.Provider)
					}
					return tw.Flush()
				}),
			},
		},
	}
}

// scopeRules parses the repeated --allow or --deny values; a malformed one
// is a usage error (exit 2) naming the flag, the value and an example.
func scopeRules(c *ucli.Context, flag string) ([]scope.Rule, error) {
	var out []scope.Rule
	for _, v := range listOf(c, flag) {
		r, err := scope.ParseRule(v)
		if err != nil {
			return nil, UsageErrorf("--%s: %v", flag, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// quotaFlags reads --max-requests and --max-response-bytes; a malformed
// value (0, negative, a fraction, an unknown unit, past 2^63-1) is a usage
// error (exit 2) naming the flag, with an example.
func quotaFlags(fa *cmdArgs) (quota.Limits, error) {
	var l quota.Limits
	var err error
	if fa.IsSet("max-requests") {
		if l.MaxRequests, err = quota.ParseCount(fa.String("max-requests")); err != nil {
			return l, UsageErrorf("--max-requests: %v", err)
		}
	}
	if fa.IsSet("max-response-bytes") {
		if l.MaxResponseBytes, err = quota.ParseSize(fa.String("max-response-bytes")); err != nil {
			return l, UsageErrorf("--max-response-bytes: %v", err)
		}
	}
	return l, nil
}

// proxyTokenShowCommand is `proxy token show TOKEN-or-PREFIX`: what one
// token stands for, its scope and expiry, the token only by prefix.
func proxyTokenShowCommand(d Deps) *ucli.Command {
	return &ucli.Command{
		Name:      "show",
		Usage:     "show one phantom token's task, provider, scope, expiry, binding and quota usage (the token only by prefix)",
		ArgsUsage: "TOKEN|PREFIX",
		Flags:     []ucli.Flag{jsonFlag()},
		Action: withCredDB(d, []string{"token"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
			tok, err := findPhantomToken(c, db, strings.TrimSuffix(a[0], "…"))
			if err != nil {
				return err
			}
			ti, err := db.LookupToken(c.Context, tok)
			// A malformed quota row is shown (the proxy refuses the
			// token), not an error of the command.
			badQuota := errors.Is(err, creddb.ErrBadQuota)
			if err != nil && !badQuota {
				return err
			}
			out := struct {
				Token string `json:"token"`
				creddb.TokenInfo
				Expired bool `json:"expired"`
				// QuotaError says why the proxy refuses the token's
				// quota row (docs/credential-proxy.md, Token quotas).
				QuotaError string `json:"quota_error,omitempty"`
				// Binding is the state of a bound token's container.
				Binding *bindingState `json:"binding,omitempty"`
			}{Token: tokenid.Show(tok), TokenInfo: ti, Expired: ti.Expired(time.Now())}
			if badQuota {
				out.QuotaError = err.Error()
			}
			if ti.Container != "" {
				cfg, err := loadConfig(c, d)
				if err != nil {
					return err
				}
				b := readBinding(cfg.TaskEndsDir(), ti.Container, ti.BoundAt)
				out.Binding = &b
			}
			if fa.Bool("json") {
				return writeJSON(d.Stdout, out)
			}
			tw := tabwriter.NewWriter(d.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "Token:\t%s\nProject:\t%s\nTask:\t%s\nCredential set:\t%s\nProvider:\t%s\n",
				out.Token, ti.Project, ti.Task, ti.CredentialSet, ti.Provider)
			switch {
			case ti.Expires.IsZero():
				fmt.Fprintln(tw, "Expires:\tnever (until revoked)")
			case out.Expired:
				fmt.Fprintf(tw, "Expires:\t%s (expired)\n", ti.Expires.Format(time.RFC3339))
			default:
				fmt.Fprintf(tw, "Expires:\t%s\n", ti.Expires.Format(time.RFC3339))
			}
			if len(ti.Allow)+len(ti.Deny) == 0 {
				fmt.Fprintln(tw, "Scope:\tthe route's")
			}
			for _, r := range ti.Allow {
				fmt.Fprintf(tw, "Allow:\t%s %s\n", strings.Join(r.Methods, ","), r.Path)
			}
			for _, r := range ti.Deny {
				fmt.Fprintf(tw, "Deny:\t%s %s\n", strings.Join(r.Methods, ","), r.Path)
			}
			if ti.Container == "" {
				fmt.Fprintln(tw, "Bound to:\tno container (until revoked or expired)")
			} else {
				fmt.Fprintf(tw, "Bound to:\t%s (since %s)\n", ti.Container, ti.BoundAt.Format(time.RFC3339))
				fmt.Fprintf(tw, "Binding:\t%s\n", out.Binding.describe())
			}
			showQuota(tw, ti.Quota, out.QuotaError)
			return tw.Flush()
		}),
	}
}

// bindingState is what the task-ends directory says about a bound token's
// container (docs/security-model.md, Tokens that die with their task).
type bindingState struct {
	// State is live, lease or gone.
	State string `json:"state"`
	// Phase and PID name the process holding the token alive (a start
	// record), when there is one.
	Phase string `json:"phase,omitempty"`
	PID   int    `json:"pid,omitempty"`
	// LeaseUntil is when an unclaimed binding's start lease runs out.
	LeaseUntil time.Time `json:"lease_until,omitzero"`
	// Reason and Ended say why and when a gone token died.
	Reason string    `json:"reason,omitempty"`
	Ended  time.Time `json:"ended,omitzero"`
}

// readBinding asks the daemons' own check (taskend.Watcher.Gone) about
// container, bound at boundAt.
func readBinding(dir, container string, boundAt time.Time) bindingState {
	w := taskend.NewWatcher(dir, nil)
	defer w.Close()
	if e, gone := w.Gone(container, boundAt); gone {
		return bindingState{State: "gone", Reason: e.Reason, Ended: e.Ended}
	}
	if st, err := taskend.ReadStart(dir, container); err == nil && taskend.Alive(st) {
		return bindingState{State: "live", Phase: st.Phase, PID: st.PID}
	}
	return bindingState{State: "lease", LeaseUntil: boundAt.Add(taskend.StartLease).UTC()}
}

func (b *bindingState) describe() string {
	switch b.State {
	case "gone":
		return fmt.Sprintf("gone (%s at %s): refused like a revoked token", b.Reason, b.Ended.Format(time.RFC3339))
	case "live":
		if b.Phase == taskend.PhaseStarting {
			return fmt.Sprintf("live, held by the runner starting it (PID %d)", b.PID)
		}
		return fmt.Sprintf("live, held by the container's init (PID %d)", b.PID)
	}
	return fmt.Sprintf("start lease until %s (no start claimed yet)", b.LeaseUntil.Format(time.RFC3339))
}

// showQuota prints a token's limits against the usage the proxy last
// wrote (about a second behind its count).
func showQuota(w io.Writer, q *quota.State, bad string) {
	switch {
	case bad != "":
		fmt.Fprintf(w, "Quota:\tunreadable, the proxy refuses the token (%s)\n", bad)
		return
	case q == nil:
		fmt.Fprintln(w, "Quota:\tnone")
		return
	}
	if q.MaxRequests > 0 {
		fmt.Fprintf(w, "Requests:\t%d of %d%s\n", q.UsedRequests, q.MaxRequests, overMark(q.UsedRequests, q.MaxRequests))
	} else {
		fmt.Fprintf(w, "Requests:\t%d (no limit)\n", q.UsedRequests)
	}
	if q.MaxResponseBytes > 0 {
		fmt.Fprintf(w, "Response bytes:\t%s of %s%s\n", quota.FormatSize(q.UsedBytes), quota.FormatSize(q.MaxResponseBytes),
			overMark(q.UsedBytes, q.MaxResponseBytes))
	} else {
		fmt.Fprintf(w, "Response bytes:\t%s (no limit)\n", quota.FormatSize(q.UsedBytes))
	}
	if q.UpdatedAt > 0 {
		fmt.Fprintf(w, "Usage as of:\t%s\n", time.Unix(q.UpdatedAt, 0).UTC().Format(time.RFC3339))
	}
}

func overMark(used, limit int64) string {
	if used >= limit {
		return " (used up: the proxy answers 429)"
	}
	return ""
}

// findPhantomToken resolves a whole token or a unique prefix of one (at
// least the 12 characters `list` shows) to the stored token.
func findPhantomToken(c *ucli.Context, db *creddb.DB, arg string) (string, error) {
	if !strings.HasPrefix(arg, tokenid.PhantomPrefix) || len(arg) < 12 {
		return "", UsageErrorf("%q is not a phantom token or a prefix of one (at least 12 characters, e.g. terok-p-1a2b as `proxy token list` shows it)", tokenid.Show(arg))
	}
	rows, err := db.ListTokens(c.Context, "")
	if err != nil {
		return "", err
	}
	var found []string
	for _, r := range rows {
		if strings.HasPrefix(r.Token, arg) {
			found = append(found, r.Token)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no phantom token starts with %s", tokenid.Show(arg))
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d phantom tokens start with %s; give more of it", len(found), tokenid.Show(arg))
}
