package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/runner/internal/auditview"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/interactive"
	"terok.dev/sandbox/runner/internal/profile"
	"terok.dev/sandbox/runner/internal/shield"
	"terok.dev/sandbox/runner/internal/shieldlog"
)

// shieldCommand is `terok-sandbox shield …` (docs/shield.md, Live operations; docs/shield.md, Status and check).
func shieldCommand(d Deps) *ucli.Command {
	jsonFlag := &ucli.BoolFlag{Name: "json", Usage: "print JSON"}
	return &ucli.Command{
		Name:  "shield",
		Usage: "egress firewall: global hook setup, status, and live control of running containers",
		Subcommands: []*ucli.Command{
			{
				Name:  "setup",
				Usage: "install the global OCI hooks (once per host or user)",
				Flags: []ucli.Flag{
					&ucli.BoolFlag{Name: "root", Usage: "system-wide, uses sudo"},
					&ucli.BoolFlag{Name: "user", Usage: "user-local (~/.local/share/containers/oci/hooks.d)"},
				},
				Action: func(c *ucli.Context) error { return shieldSetup(c, d) },
			},
			{
				Name:   "status",
				Usage:  "show the shield configuration and hook health",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldStatus(c, d) },
			},
			{
				Name:   "check",
				Usage:  "check podman, nft, the hooks and the DNS tier, and stop resolvers leaked by failed starts (exit 1 when there are issues)",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldCheck(c, d) },
			},
			shieldEntriesCommand(d),
			{
				Name: "up", Usage: "re-enable the firewall of a running container", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldUpDown(c, d, false) },
			},
			{
				Name: "down", Usage: "switch a running container's firewall to bypass (logged; its resolver forwards every name; special ranges still rejected unless --all)", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: "all", Usage: "also allow private ranges"}, jsonFlag},
				Action: func(c *ucli.Context) error { return shieldUpDown(c, d, true) },
			},
			{
				Name: "quarantine", Usage: "cut a running container off: one transaction refuses all its traffic (DNS and host services included) until shield up; survives restarts", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldQuarantine(c, d) },
			},
			{
				Name: "profiles", Usage: "list the bundled and user profiles with their entry counts and where each comes from",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldProfiles(c, d) },
			},
			{
				Name: "profile", Usage: "work with profiles built from what a container did",
				Subcommands: []*ucli.Command{{
					Name: "suggest", Usage: "print (or --output) a profile of the names and addresses a container was refused as not allowlisted", ArgsUsage: "CONTAINER",
					Flags:  []ucli.Flag{&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write it to FILE (created, never overwritten)"}},
					Action: func(c *ucli.Context) error { return shieldProfileSuggest(c, d) },
				}},
			},
			{
				Name: "resolve", Usage: "re-resolve a running container's allowlisted names now, through its own resolver", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: "force", Usage: "drop the resolver's cached answers first"}, jsonFlag},
				Action: func(c *ucli.Context) error { return shieldResolve(c, d) },
			},
			{
				Name: "allow", Usage: "allow an IP, CIDR or domain for a running container (at once and persisted; a domain's addresses as the container resolves it)", ArgsUsage: "CONTAINER TARGET",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldAllowDeny(c, d, true) },
			},
			{
				Name: "deny", Usage: "deny an IP, CIDR or domain for a running container (at once and persisted)", ArgsUsage: "CONTAINER TARGET",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldAllowDeny(c, d, false) },
			},
			{
				Name: "state", Usage: "firewall state of a container: up, down, down_all, quarantine, inactive or error", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldState(c, d) },
			},
			{
				Name: "rules", Usage: "print a container's live ruleset", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldRules(c, d) },
			},
			{
				Name: "preview", Usage: "print the ruleset up (or --down) would apply, without applying it", ArgsUsage: "CONTAINER",
				Flags: []ucli.Flag{
					&ucli.BoolFlag{Name: "down", Usage: "the bypass ruleset"},
					&ucli.BoolFlag{Name: "all", Usage: "with --down: also allow private ranges"},
				},
				Action: func(c *ucli.Context) error { return shieldPreview(c, d) },
			},
			{
				Name: "log", Usage: "show a container's refused connections, refused DNS names and operator actions, by time", ArgsUsage: "CONTAINER",
				Flags: []ucli.Flag{
					&ucli.IntFlag{Name: "n", Aliases: []string{"tail"}, Usage: "only the last N records (0: all)"},
					&ucli.StringFlag{Name: "since", Usage: "records at or after a time (RFC 3339, YYYY-MM-DD) or a duration before now (90m)"},
					jsonFlag,
				},
				Action: func(c *ucli.Context) error { return shieldLog(c, d) },
			},
			{
				Name: "interactive", Usage: "attach as the decider of a container in interactive mode: allow each held connection once, always (persisted like shield allow) or refuse", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: "json", Usage: "print held connections as JSON lines and read JSON answers from stdin (docs/shield.md, Interactive decider protocol)"}},
				Action: func(c *ucli.Context) error { return shieldInteractive(c, d) },
			},
			{
				Name: "watch", Usage: "stream a container's refused connections, refused DNS names and operator actions until interrupted", ArgsUsage: "CONTAINER",
				Flags:  []ucli.Flag{jsonFlag},
				Action: func(c *ucli.Context) error { return shieldWatch(c, d) },
			},
		},
	}
}

// shieldAdapter builds the adapter from the configuration.
func shieldAdapter(c *ucli.Context, d Deps) (*shield.Adapter, error) {
	cfg, err := loadConfig(c, d)
	if err != nil {
		return nil, err
	}
	hook, _ := daemonctl.FindBinary("terok-shield-hook")
	return shield.NewAdapter(cfg, d.Env, hook, d.Log), nil
}

// shieldFor builds the adapter and the shield of one container (an error
// when the container does not exist or is not shielded).
func shieldFor(c *ucli.Context, d Deps, container string) (*shield.Shield, error) {
	ad, err := shieldAdapter(c, d)
	if err != nil {
		return nil, err
	}
	return ad.ForContainer(c.Context, container)
}

// shieldNamed checks that the command names one container (shieldArgs) and
// returns the name and the container's shield (shieldFor).
func shieldNamed(c *ucli.Context, d Deps) (string, *shield.Shield, error) {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return "", nil, err
	}
	sh, err := shieldFor(c, d, a[0])
	return a[0], sh, err
}

// args checks the positional arguments of a per-container command.
func shieldArgs(c *ucli.Context, names ...string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) != len(names) {
		return nil, UsageErrorf("%s needs %s (got %d argument(s))", c.Command.FullName(), strings.Join(names, " "), len(a))
	}
	for i, v := range a {
		if strings.TrimSpace(v) == "" || strings.HasPrefix(v, "-") {
			return nil, UsageErrorf("invalid %s %q", names[i], v)
		}
		// The container name rule (docs/runner.md, Names).
		if names[i] == "CONTAINER" {
			if _, err := checkName(v); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

func shieldSetup(c *ucli.Context, d Deps) error {
	if c.Args().Present() {
		return UsageErrorf("shield setup takes no arguments")
	}
	root, user := c.Bool("root"), c.Bool("user")
	if root == user {
		a, err := shieldAdapter(c, d)
		if err != nil {
			return err
		}
		_, err = a.Setup(c.Context, root, user)
		return UsageErrorf("%v", err)
	}
	a, err := shieldAdapter(c, d)
	if err != nil {
		return err
	}
	res, err := a.Setup(c.Context, root, user)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.Stdout, "Shield hooks installed in %s\n", res.Dir)
	if res.SeccompProfile != "" {
		fmt.Fprintf(d.Stdout, "Seccomp profile installed at %s\n", res.SeccompProfile)
	}
	if res.ConfChanged {
		fmt.Fprintf(d.Stdout, "Added %s to [engine] hooks_dir in %s\n", res.Dir, a.Opts.Paths.UserContainersConf)
	}
	if res.Warning != "" {
		fmt.Fprintf(d.Stderr, "Warning: %s\n", res.Warning)
	}
	return nil
}

func shieldStatus(c *ucli.Context, d Deps) error {
	a, err := shieldAdapter(c, d)
	if err != nil {
		return err
	}
	st := a.Status()
	env := a.Environment(c.Context)
	if c.Bool("json") {
		return writeJSON(d.Stdout, struct {
			shield.Status
			Environment shield.EnvCheck `json:"environment"`
		}{st, env})
	}
	audit := "disabled"
	if st.AuditEnabled {
		audit = "enabled"
	}
	fmt.Fprintf(d.Stdout, "Shield mode:    %s\n", st.Mode)
	fmt.Fprintf(d.Stdout, "Profiles:       %s\n", strings.Join(st.Profiles, ", "))
	fmt.Fprintf(d.Stdout, "Audit:          %s\n", audit)
	fmt.Fprintf(d.Stdout, "Hooks:          %s\n", env.Hooks)
	fmt.Fprintf(d.Stdout, "Health:         %s\n", env.Health)
	if st.Bypass {
		fmt.Fprintf(d.Stderr, "\nWarning: %s\n", shield.BypassWarning)
	}
	if env.NeedsSetup {
		fmt.Fprintf(d.Stderr, "\n%s\n", env.SetupHint)
	}
	return nil
}

func shieldCheck(c *ucli.Context, d Deps) error {
	a, err := shieldAdapter(c, d)
	if err != nil {
		return err
	}
	env := a.Check(c.Context)
	if c.Bool("json") {
		if err := writeJSON(d.Stdout, env); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(d.Stdout, "Podman:         %s\n", env.PodmanVersion)
		fmt.Fprintf(d.Stdout, "nft:            %s\n", orNone(env.Nft))
		fmt.Fprintf(d.Stdout, "DNS tier:       %s\n", env.DNSTier)
		fmt.Fprintf(d.Stdout, "Hooks:          %s\n", env.Hooks)
		if env.HooksDir != "" {
			fmt.Fprintf(d.Stdout, "Hooks dir:      %s\n", env.HooksDir)
		}
		fmt.Fprintf(d.Stdout, "Health:         %s\n", env.Health)
		for _, cl := range env.Cleaned {
			fmt.Fprintf(d.Stdout, "Cleaned up:     %s\n", cl)
		}
		for _, is := range env.Issues {
			fmt.Fprintf(d.Stdout, "Issue:          %s\n", is)
		}
		if env.SetupHint != "" {
			fmt.Fprintf(d.Stdout, "\n%s\n", env.SetupHint)
		}
	}
	if !env.OK {
		return ExitWith(ExitError, fmt.Sprintf("shield check: %d issue(s)", len(env.Issues)))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(not found)"
	}
	return s
}

func shieldUpDown(c *ucli.Context, d Deps, down bool) error {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return err
	}
	if !down && c.IsSet("all") {
		return UsageErrorf("--all requires down")
	}
	ad, err := shieldAdapter(c, d)
	if err != nil {
		return err
	}
	name := a[0]
	if ad.Cfg.ShieldBypass {
		fmt.Fprintf(d.Stderr, "Warning: %s; nothing to do for %s\n", shield.BypassWarning, name)
		return nil
	}
	sh, err := ad.ForContainer(c.Context, name)
	if err != nil {
		return err
	}
	allowAll := down && c.Bool("all")
	if down {
		err = sh.Down(c.Context, name, allowAll)
	} else {
		err = sh.Up(c.Context, name)
	}
	if err != nil {
		return err
	}
	state := sh.State(c.Context, name)
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]any{"container": name, "state": state})
	}
	switch {
	case down && allowAll:
		fmt.Fprintf(d.Stdout, "Shield down for %s (all traffic allowed, including private ranges).\n", name)
	case down:
		fmt.Fprintf(d.Stdout, "Shield down for %s (private ranges still rejected).\n", name)
	default:
		fmt.Fprintf(d.Stdout, "Shield up for %s.\n", name)
	}
	return nil
}

func shieldQuarantine(c *ucli.Context, d Deps) error {
	name, sh, err := shieldNamed(c, d)
	if err != nil {
		return err
	}
	changed, err := sh.Quarantine(c.Context, name)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]any{"container": name, "state": shield.StateQuarantine, "changed": changed})
	}
	if !changed {
		fmt.Fprintf(d.Stdout, "%s is already quarantined: nothing changed.\n", name)
		return nil
	}
	fmt.Fprintf(d.Stdout, "Quarantined %s: all its traffic is refused (DNS and host services included), also after a restart. 'terok-sandbox shield up %s' restores its ruleset.\n", name, name)
	return nil
}

func shieldProfiles(c *ucli.Context, d Deps) error {
	if c.Args().Present() {
		return UsageErrorf("shield profiles takes no arguments (e.g. terok-sandbox shield profiles --json)")
	}
	ad, err := shieldAdapter(c, d)
	if err != nil {
		return err
	}
	cat := profile.Store{UserDir: ad.Cfg.ShieldProfilesDir()}.Catalog(ad.Cfg.ShieldProfiles)
	bad := 0
	for _, p := range cat {
		if p.Error != "" {
			bad++
		}
	}
	if c.Bool("json") {
		if cat == nil {
			cat = []profile.Info{}
		}
		if err := writeJSON(d.Stdout, cat); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(d.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSOURCE\tENTRIES\tDOMAINS\tADDRESSES\tWHERE")
		for _, p := range cat {
			name := p.Name
			if p.Configured {
				name += " *"
			}
			where := "built in"
			if p.Path != "" {
				where = p.Path
				if p.Shadows {
					where += " (shadows the bundled " + p.Name + ")"
				}
			}
			if p.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t%s: INVALID: %s\n", name, p.Source, where, p.Error)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", name, p.Source, p.Entries, p.Domains, p.Addresses, where)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(d.Stdout, "* in shield_profiles")
	}
	if bad > 0 {
		return ExitWith(ExitError, fmt.Sprintf("shield profiles: %d profile(s) cannot be used; a launch naming one is refused", bad))
	}
	return nil
}

func shieldResolve(c *ucli.Context, d Deps) error {
	name, sh, err := shieldNamed(c, d)
	if err != nil {
		return err
	}
	res, err := sh.Resolve(c.Context, name, c.Bool("force"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]any{"container": name, "force": res.Force, "names": res.Names})
	}
	how := "answers still cached were used"
	if res.Force {
		how = "cached answers dropped first"
	}
	fmt.Fprintf(d.Stdout, "Resolved %d name(s) for %s through its resolver (%s):\n", len(res.Names), name, how)
	tw := tabwriter.NewWriter(d.Stdout, 0, 4, 2, ' ', 0)
	for _, n := range res.Names {
		addrs := strings.Join(n.Addresses, ", ")
		if addrs == "" {
			addrs = "-"
		}
		cached := ""
		if n.Cached {
			cached = " (cached)"
		}
		rc := n.Rcode
		if n.RcodeAAAA != n.Rcode {
			rc += "/" + n.RcodeAAAA + " (A/AAAA)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", n.Name, rc, addrs, cached)
	}
	return tw.Flush()
}

func shieldAllowDeny(c *ucli.Context, d Deps, allow bool) error {
	a, err := shieldArgs(c, "CONTAINER", "TARGET")
	if err != nil {
		return err
	}
	name, target := a[0], a[1]
	if _, _, err := shield.ParseTarget(target); err != nil {
		return UsageErrorf("%v", err)
	}
	sh, err := shieldFor(c, d, name)
	if err != nil {
		return err
	}
	_, domain, _ := shield.ParseTarget(target)
	var ips []string
	if allow {
		ips, err = sh.Allow(c.Context, name, target)
	} else {
		ips, err = sh.Deny(c.Context, name, target)
	}
	if err != nil {
		return err
	}
	if domain != "" {
		// The container's resolver learns (or stops learning) the domain's
		// addresses; none is known here.
		if c.Bool("json") {
			key := "denied"
			if allow {
				key = "allowed"
			}
			return writeJSON(d.Stdout, map[string]any{"container": name, "target": target, "domain": domain, key: []string{}})
		}
		if allow {
			fmt.Fprintf(d.Stdout, "Allowed %s for %s: its addresses are allowed as the container's resolver looks them up\n", domain, name)
		} else {
			fmt.Fprintf(d.Stdout, "Denied %s for %s: the container's resolver refuses it and drops the addresses it learned for it\n", domain, name)
		}
		return nil
	}
	if c.Bool("json") {
		key := "denied"
		if allow {
			key = "allowed"
		}
		return writeJSON(d.Stdout, map[string]any{"container": name, "target": target, key: ips})
	}
	if allow {
		fmt.Fprintf(d.Stdout, "Allowed %s -> %s for %s\n", target, strings.Join(ips, ", "), name)
	} else {
		fmt.Fprintf(d.Stdout, "Denied %s (%s) for %s\n", target, strings.Join(ips, ", "), name)
	}
	return nil
}

// shieldProbed is how state and rules start: the one CONTAINER, the
// configuration's probe shield and the container's state. They work for
// any container, shielded or not: one without the annotation simply has no
// table (inactive), which the query shows; but inactive is also the answer
// for a name podman does not know, which is an error (missingOr).
func shieldProbed(c *ucli.Context, d Deps) (string, *shield.Shield, string, error) {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return "", nil, "", err
	}
	ad, err := shieldAdapter(c, d)
	if err != nil {
		return "", nil, "", err
	}
	sh := ad.Probe()
	st := sh.State(c.Context, a[0])
	if st == shield.StateInactive {
		if err := missingOr(c.Context, d, a[0], nil); err != nil {
			return "", nil, "", err
		}
	}
	return a[0], sh, st, nil
}

func shieldState(c *ucli.Context, d Deps) error {
	name, _, st, err := shieldProbed(c, d)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]string{"container": name, "state": st})
	}
	fmt.Fprintln(d.Stdout, st)
	return nil
}

func shieldRules(c *ucli.Context, d Deps) error {
	name, sh, st, err := shieldProbed(c, d)
	if err != nil {
		return err
	}
	rules := sh.Rules(c.Context, name)
	if c.Bool("json") {
		return writeJSON(d.Stdout, map[string]string{"container": name, "state": st, "rules": rules})
	}
	fmt.Fprintf(d.Stdout, "State: %s\n", st)
	if strings.TrimSpace(rules) == "" {
		fmt.Fprintf(d.Stdout, "No rules found for %s\n", name)
		return nil
	}
	fmt.Fprint(d.Stdout, rules)
	if !strings.HasSuffix(rules, "\n") {
		fmt.Fprintln(d.Stdout)
	}
	return nil
}

func shieldPreview(c *ucli.Context, d Deps) error {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return err
	}
	if c.Bool("all") && !c.Bool("down") {
		return UsageErrorf("--all requires --down")
	}
	sh, err := shieldFor(c, d, a[0])
	if err != nil {
		return err
	}
	text, err := sh.Preview(c.Bool("down"), c.Bool("all"))
	if err != nil {
		return err
	}
	fmt.Fprint(d.Stdout, text)
	return nil
}

func shieldLog(c *ucli.Context, d Deps) error {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return err
	}
	n := c.Int("n")
	if n < 0 {
		return UsageErrorf("-n must be 0 (all) or positive (example: shield log -n 20 CONTAINER)")
	}
	var q shieldlog.Query
	q.Last = n
	if v := c.String("since"); v != "" {
		if q.Since, err = auditview.ParseSince(v, time.Now()); err != nil {
			return UsageErrorf("--since: %v (example: --since 30m or --since 2026-12-03T07:00:00Z)", err)
		}
	}
	dir, err := shieldStateDir(c, d, a[0])
	if err != nil {
		return err
	}
	recs, err := shieldlog.Read(dir, q, func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) })
	if err != nil {
		return err
	}
	asJSON := c.Bool("json")
	if !asJSON {
		fmt.Fprintln(d.Stdout, shieldlog.Header())
	}
	for _, r := range recs {
		if err := printShieldRecord(d, r, asJSON); err != nil {
			return err
		}
	}
	return nil
}

// shieldWatch streams the container's new records until SIGINT or SIGTERM
// (exit 0).
func shieldWatch(c *ucli.Context, d Deps) error {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return err
	}
	dir, err := shieldStateDir(c, d, a[0])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	asJSON := c.Bool("json")
	if !asJSON {
		fmt.Fprintln(d.Stdout, shieldlog.Header())
	}
	return shieldlog.Watch(ctx, dir, 0, func(r audit.Record) error { return printShieldRecord(d, r, asJSON) },
		func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) })
}

// shieldInteractive attaches to the container resolver's decider socket
// until the input ends, SIGINT or SIGTERM (exit 0) or the resolver goes
// away (an error).
func shieldInteractive(c *ucli.Context, d Deps) error {
	name, sh, err := shieldNamed(c, d)
	if err != nil {
		return err
	}
	dir, err := sh.StateDir()
	if err != nil {
		return err
	}
	conn, err := interactive.Dial(dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return interactive.Run(ctx, conn, d.Stdin, d.Stdout, interactive.Options{
		JSON: c.Bool("json"),
		Allow: func(ctx context.Context, dst string) error {
			_, err := sh.Allow(ctx, name, dst)
			return err
		},
		Warn: func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) },
	})
}

// shieldProfileSuggest writes a profile suggested by the container's
// refused records (docs/shield.md, Suggesting a profile).
func shieldProfileSuggest(c *ucli.Context, d Deps) error {
	a, err := shieldArgs(c, "CONTAINER")
	if err != nil {
		return err
	}
	out := c.String("output")
	if c.IsSet("output") && strings.TrimSpace(out) == "" {
		return UsageErrorf("--output needs a file name (example: shield profile suggest --output mine.txt CONTAINER)")
	}
	dir, err := shieldStateDir(c, d, a[0])
	if err != nil {
		return err
	}
	recs, err := shieldlog.Read(dir, shieldlog.Query{}, func(m string) { fmt.Fprintf(d.Stderr, "Warning: %s\n", m) })
	if err != nil {
		return err
	}
	s := shieldlog.Suggest(recs)
	text := s.Profile(a[0], time.Now())
	if out == "" {
		_, err := fmt.Fprint(d.Stdout, text)
		return err
	}
	if err := writeNewAtomic(out, []byte(text)); err != nil {
		return err
	}
	fmt.Fprintf(d.Stdout, "Wrote %d entries to %s: review them, then save it as a user profile (docs/shield.md, Profiles).\n", len(s.Entries), out)
	return nil
}

// writeNewAtomic writes data to path, which must not exist yet: a
// temporary file beside it, synced, then hard-linked to path (link never
// replaces an existing file, and a reader sees the whole file or none).
func writeNewAtomic(path string, data []byte) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("write the suggested profile: %s exists (choose another file; an existing one is never overwritten)", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write the suggested profile: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write the suggested profile %s: %w (an existing file is never overwritten)", path, err)
	}
	return nil
}

// shieldStateDir finds the container's shield state directory.
func shieldStateDir(c *ucli.Context, d Deps, container string) (string, error) {
	sh, err := shieldFor(c, d, container)
	if err != nil {
		return "", err
	}
	return sh.StateDir()
}

func printShieldRecord(d Deps, r audit.Record, asJSON bool) error {
	if asJSON {
		return auditview.WriteJSONLine(d.Stdout, r)
	}
	_, err := fmt.Fprintln(d.Stdout, shieldlog.Row(r))
	return err
}
