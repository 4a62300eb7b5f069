package shield

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/seccomp"
)

// BypassWarning is logged whenever the firewall is skipped by the setting.
const BypassWarning = "bypass_firewall_no_protection is set: the egress firewall is DISABLED and containers have unrestricted network access"

// Adapter wraps the shield for the runner (docs/shield.md, Status and check): one
// configuration, one Shield per task.
type Adapter struct {
	Cfg  config.Config
	Opts Options
}

// NewAdapter builds an adapter for the real host.
func NewAdapter(cfg config.Config, env config.Env, hookBinary string, log *slog.Logger) *Adapter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	get := func(k string) string {
		if env.Getenv == nil {
			return ""
		}
		return env.Getenv(k)
	}
	return &Adapter{Cfg: cfg, Opts: Options{
		Paths:      DefaultHostPaths(env.Home, get("XDG_CONFIG_HOME"), get("CONTAINERS_CONF"), env.EUID == 0),
		HookBinary: hookBinary,
		EUID:       env.EUID,
		Log:        log,
		Facts:      podman.NewInfoCache(cfg.RuntimeDir, get, env.EUID),
	}}
}

func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// ShieldFor returns the Shield of one task directory.
func (a *Adapter) ShieldFor(taskDir string) *Shield {
	return a.shieldAt(config.ShieldStateDir(taskDir))
}

func (a *Adapter) shieldAt(stateDir string) *Shield {
	return New(Config{
		StateDir:        stateDir,
		DefaultProfiles: append([]string(nil), a.Cfg.ShieldProfiles...),
		LoopbackPorts:   []int{a.Cfg.GatePort, a.Cfg.ProxyPort, a.Cfg.SSHAgentPort},
		AuditEnabled:    a.Cfg.ShieldAudit,
		ProfilesDir:     a.Cfg.ShieldProfilesDir(),
		UpstreamDNS:     a.Cfg.ShieldUpstreamDNS,
		DecideTimeout:   a.Cfg.ShieldDecideTimeout,
		TaskEnds:        a.Cfg.TaskEndsDir(),
	}, a.Opts)
}

// PreStart returns the firewall arguments for a launch. Under bypass it
// warns loudly and returns none; any other failure aborts the launch.
func (a *Adapter) PreStart(ctx context.Context, l firewall.Launch) ([]string, error) {
	container, taskDir := l.Container, l.TaskDir
	if a.Cfg.ShieldBypass {
		if a.Opts.Log != nil {
			a.Opts.Log.Warn(BypassWarning)
		}
		return nil, nil
	}
	if taskDir == "" {
		return nil, fmt.Errorf("no task directory given for %s: the shield needs one for its state", container)
	}
	// Errors go back unchanged: the launcher names the container and aborts.
	s := a.ShieldFor(taskDir)
	mode, err := shieldbundle.ParseMode(l.Mode)
	if err != nil {
		return nil, err
	}
	s.cfg.Mode, s.cfg.Project, s.cfg.Task = mode, l.Project, l.Task
	return s.PreStart(ctx, container, nil)
}

// Down switches a container's firewall to bypass; no-op under bypass.
func (a *Adapter) Down(ctx context.Context, container, taskDir string, allowAll bool) error {
	if a.Cfg.ShieldBypass {
		return nil
	}
	return a.ShieldFor(taskDir).Down(ctx, container, allowAll)
}

// Up re-enables a container's firewall; no-op under bypass.
func (a *Adapter) Up(ctx context.Context, container, taskDir string) error {
	if a.Cfg.ShieldBypass {
		return nil
	}
	return a.ShieldFor(taskDir).Up(ctx, container)
}

// State always asks the live ruleset, even under bypass: containers started
// before bypass was set may still be firewalled.
func (a *Adapter) State(ctx context.Context, container, taskDir string) string {
	return a.ShieldFor(taskDir).State(ctx, container)
}

// Status is the adapter's configuration summary (docs/shield.md, Status and check).
type Status struct {
	Mode         string   `json:"mode"`
	Profiles     []string `json:"profiles"`
	AuditEnabled bool     `json:"audit_enabled"`
	Bypass       bool     `json:"bypass_firewall_no_protection,omitempty"`
}

// Status reports mode, profiles and audit setting.
func (a *Adapter) Status() Status {
	return Status{Mode: "hook", Profiles: append([]string{}, a.Cfg.ShieldProfiles...), AuditEnabled: a.Cfg.ShieldAudit, Bypass: a.Cfg.ShieldBypass}
}

// Environment is the environment check alone (what `shield status`
// shows); under bypass a synthetic failure.
func (a *Adapter) Environment(ctx context.Context) EnvCheck {
	if a.Cfg.ShieldBypass {
		return EnvCheck{OK: false, Health: HealthBypass, PodmanVersion: podmaninfo.Version{}.String(), Hooks: HooksPerContainer,
			Issues: []string{"bypass_firewall_no_protection is set — egress firewall disabled"}}
	}
	r := CheckEnvironment(ctx, a.Opts.Tools, a.podmanInfo(ctx), a.Opts.Paths)
	if a.Opts.HookBinary == "" {
		r.Issues = append(r.Issues, "terok-shield-hook not found next to terok-sandbox or on PATH: no shielded container can start (it applies the firewall and is the container's DNS resolver); install it (make install)")
		r.OK = false
	}
	return r
}

// Check is `shield check`: the environment check, and the leftovers of
// failed starts stopped and reported (StopLeaks), under bypass too.
func (a *Adapter) Check(ctx context.Context) EnvCheck {
	r := a.Environment(ctx)
	stopped, issues := a.StopLeaks(ctx)
	r.Cleaned = stopped
	r.Issues = append(r.Issues, issues...)
	r.OK = len(r.Issues) == 0
	return r
}

func (a *Adapter) podmanInfo(ctx context.Context) podmaninfo.Info {
	if a.Opts.Info != nil {
		return *a.Opts.Info
	}
	s := New(Config{}, a.Opts)
	return s.podmanInfo(ctx)
}

// Setup installs the global hooks (docs/shield.md, Global hooks and `shield setup`).
func (a *Adapter) Setup(ctx context.Context, root, user bool) (SetupResult, error) {
	return Setup(ctx, SetupOptions{Root: root, User: user, HookBinary: a.Opts.HookBinary, Paths: a.Opts.Paths, EUID: a.Opts.EUID, Tools: a.Opts.Tools,
		SeccompProfile: seccomp.Path(a.Cfg.ConfigDir)})
}

// ForContainer finds a running (or created) container's shield through its
// terok.shield.state_dir annotation, so the CLI needs only the name.
func (a *Adapter) ForContainer(ctx context.Context, container string) (*Shield, error) {
	probe := New(Config{}, a.Opts)
	c, found, err := probe.inspectContainer(ctx, container)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("no such container %s", container)
	}
	dir := c.Annotations[shieldbundle.AnnStateDir]
	if dir == "" {
		return nil, &NotShieldedError{Container: container}
	}
	if err := checkStateDir(dir, a.Opts.EUID); err != nil {
		return nil, fmt.Errorf("container %s: %w", container, err)
	}
	return a.shieldAt(dir), nil
}

// NotShieldedError: the container was not started with the shield (it has
// no terok.shield.state_dir annotation: started under bypass, or outside
// terok-sandbox), so there is no firewall of ours to change.
type NotShieldedError struct{ Container string }

func (e *NotShieldedError) Error() string {
	return fmt.Sprintf("container %s was not started with the shield (no %s annotation)", e.Container, shieldbundle.AnnStateDir)
}

// checkStateDir refuses a state directory the shield must not act on: a
// relative path, a non-directory, one writable by others or owned by
// someone else (its files decide which rules are applied).
func checkStateDir(dir string, euid int) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("shield state_dir %q is not absolute", dir)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("shield state_dir %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("shield state_dir %s is not a directory", dir)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("shield state_dir %s is group- or world-writable (mode %o); chmod 700 it", dir, st.Mode().Perm())
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != euid {
		return fmt.Errorf("shield state_dir %s belongs to uid %d, not to you (uid %d)", dir, sys.Uid, euid)
	}
	return nil
}

// Probe is a Shield without a state directory, for the queries that need
// only the container (state, rules).
func (a *Adapter) Probe() *Shield { return New(Config{}, a.Opts) }

// noVerification is the check under bypass: nothing to verify.
type noVerification struct{}

func (noVerification) Finish(context.Context, string) error { return nil }
func (noVerification) Stop()                                {}

// BeginVerify starts the post-start check while podman runs
// (firewall.EarlyVerifier); Finish is as strict as VerifyStarted.
func (a *Adapter) BeginVerify(ctx context.Context, container, taskDir string) firewall.Verification {
	if a.Cfg.ShieldBypass {
		return noVerification{}
	}
	return a.ShieldFor(taskDir).BeginVerify(ctx, container)
}

// VerifyStarted is the launcher's post-start check (firewall.Verifier): the
// hook must have run and the table must be in place, else the launcher
// removes the container.
func (a *Adapter) VerifyStarted(ctx context.Context, container, taskDir, containerID string) error {
	if a.Cfg.ShieldBypass {
		return nil
	}
	return a.ShieldFor(taskDir).VerifyStarted(ctx, container, containerID)
}
