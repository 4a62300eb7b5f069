package hostsetup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/internal/daemonctl"
	"terok.dev/sandbox/runner/internal/seccomp"
	"terok.dev/sandbox/runner/internal/shield"
)

// host is a user's host in a temporary tree: home, XDG directories,
// podman's system files, and a scripted systemctl whose state (which
// sockets are enabled) lives in files, with every call logged.
type host struct {
	root, home string
	calls      string // systemctl call log
	opts       Options
	mgrs       DaemonManagers
}

func writeExec(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func newHost(t *testing.T) *host {
	t.Helper()
	if _, err := seccomp.FindPodmanDefault(); err != nil {
		t.Skipf("needs podman's default seccomp profile: %v", err)
	}
	root := t.TempDir()
	// The tree must be one only root and the test user could write, as a
	// home is (CheckHookBinary and seccomp refuse anything else).
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &host{root: root, home: filepath.Join(root, "home"), calls: filepath.Join(root, "systemctl.log")}
	vars := map[string]string{
		"XDG_RUNTIME_DIR": filepath.Join(root, "run"),
		"PATH":            filepath.Join(root, "bin"),
	}
	env := testkit.Env(vars, 1000, h.home)
	cfg := config.Defaults(env)
	bin := filepath.Join(root, "bin")
	writeExec(t, filepath.Join(bin, "terok-shield-hook"), "exit 0\n")
	writeExec(t, filepath.Join(bin, "terok-gate"), "exit 0\n")
	writeExec(t, filepath.Join(bin, "terok-credential-proxy"), "exit 0\n")
	writeExec(t, filepath.Join(bin, "podman"), "exit 0\n")
	writeExec(t, filepath.Join(bin, "nft"), "exit 0\n")
	state := filepath.Join(root, "systemd-state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	// $1 is --user; enable/disable carry --now before the unit.
	writeExec(t, filepath.Join(bin, "systemctl"), fmt.Sprintf(`echo "$*" >> %[1]s
case "$2" in
is-system-running) if [ -f %[2]s/offline ]; then echo offline; exit 1; fi; echo running ;;
is-active) if [ -f %[2]s/"$3" ]; then echo active; else echo inactive; exit 3; fi ;;
enable) touch %[2]s/"$4" ;;
disable) rm -f %[2]s/"$4" ;;
esac
exit 0
`, h.calls, state))
	mgrs := NewDaemonManagers(cfg, env, nil)
	// The tree is in the test's temporary directory, itself usually in
	// /tmp: what the units cannot see is a directory of its own here.
	mgrs.PrivateTmpDirs = []string{filepath.Join(root, "private-tmp")}
	sd := daemonctl.Systemd{Systemctl: filepath.Join(bin, "systemctl")}
	findBin := func(name string) (string, error) { return filepath.Join(bin, name), nil }
	mgrs.Gate.Systemd, mgrs.Gate.FindBinary = sd, findBin
	mgrs.Proxy.Systemd, mgrs.Proxy.FindBinary = sd, findBin
	h.mgrs = mgrs
	h.opts = Options{
		Cfg: cfg, Env: env, Scope: ScopeUser,
		Paths: shield.HostPaths{
			Home:                  h.home,
			UserContainersConf:    filepath.Join(h.home, ".config", "containers", "containers.conf"),
			SystemContainersConfs: []string{filepath.Join(root, "etc-containers.conf")},
			SystemHooksDirs:       []string{filepath.Join(root, "usr-hooks.d")},
		},
		Tools:      shield.Tools{Path: bin},
		HookBinary: filepath.Join(bin, "terok-shield-hook"),
	}
	if err := os.MkdirAll(h.home, 0o755); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *host) setupSteps(t *testing.T) []Step {
	o := h.opts
	o.Daemons = h.mgrs.Daemons(context.Background(), o.Scope)
	if len(o.Daemons) != 2 {
		t.Fatalf("daemons: %d", len(o.Daemons))
	}
	if _, ok := o.Daemons[0].(unitDaemon); !ok {
		t.Fatalf("with a user manager the daemons are units, got %T", o.Daemons[0])
	}
	return o.Steps()
}

func (h *host) setup(t *testing.T, dry bool) (Result, string) {
	t.Helper()
	var out bytes.Buffer
	res, err := Run(context.Background(), h.setupSteps(t), dry, &out)
	if err != nil {
		t.Fatalf("setup: %v\n%s", err, out.String())
	}
	return res, out.String()
}

func (h *host) uninstall(t *testing.T, purge, dry bool) (Result, string) {
	t.Helper()
	var out bytes.Buffer
	steps := h.opts.UninstallSteps(h.mgrs.RemovalDaemons(context.Background(), h.opts.Scope), purge)
	res, err := Run(context.Background(), steps, dry, &out)
	if err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out.String())
	}
	return res, out.String()
}

// snapshot is every path below the home, the runtime directory, podman's
// system files and systemd's state, with its mode and content hash.
func (h *host) snapshot(t *testing.T) map[string]string {
	t.Helper()
	snap := map[string]string{}
	for _, top := range []string{h.home, filepath.Join(h.root, "run"), filepath.Join(h.root, "usr-hooks.d"), filepath.Join(h.root, "systemd-state")} {
		snapshotInto(t, snap, top, nil)
	}
	return snap
}

// snapshotInto adds every path below top (none when top is missing) but
// those skip names to snap, with its mode and, for a regular file, its
// content hash.
func snapshotInto(t *testing.T, snap map[string]string, top string, skip func(path string) bool) {
	t.Helper()
	err := filepath.WalkDir(top, func(p string, e fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if skip != nil && skip(p) {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		snap[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func diff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, "gone: "+k)
		} else if v != w {
			out = append(out, "changed: "+k+" "+v+" -> "+w)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, "new: "+k)
		}
	}
	sort.Strings(out)
	return out
}

func (h *host) callCount(t *testing.T, prefix string) int {
	data, err := os.ReadFile(h.calls)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestSetupInstallsEverythingThenHasNothingToDo(t *testing.T) {
	h := newHost(t)
	c := h.opts.Cfg
	res, out := h.setup(t, false)
	if res.Changed != 6 {
		t.Errorf("first setup changed %d steps, want 6:\n%s", res.Changed, out)
	}
	for p, want := range map[string]os.FileMode{c.StateDir: 0o700, c.CredentialsDir: 0o700, c.RuntimeDir: 0o700, c.ConfigDir: 0o755, c.GateBasePath(): 0o700} {
		if got := mode(t, p); got != want {
			t.Errorf("%s: mode %04o, want %04o", p, got, want)
		}
	}
	if data, err := os.ReadFile(filepath.Join(c.ConfigDir, config.FileName)); err != nil || !bytes.Equal(data, DefaultConfig(c)) {
		t.Errorf("default config: %v", err)
	}
	// The default config is one the loader accepts, and means the defaults.
	loaded, err := config.Load(h.opts.Env, "")
	if err != nil {
		t.Fatalf("load the written config: %v", err)
	}
	if loaded.GatePort != c.GatePort || loaded.StateDir != c.StateDir {
		t.Errorf("the default config changed values: %+v", loaded)
	}
	hooks := h.opts.Paths.UserHooksDir()
	for _, n := range []string{"terok-shield-createRuntime.json", "terok-shield-poststop.json"} {
		data, err := os.ReadFile(filepath.Join(hooks, n))
		if err != nil || !bytes.Contains(data, []byte(h.opts.HookBinary)) {
			t.Errorf("descriptor %s: %v %s", n, err, data)
		}
	}
	if !containsPath(h.opts.Paths.HooksDirs(), hooks) {
		t.Errorf("podman would not read %s: %v", hooks, h.opts.Paths.HooksDirs())
	}
	if err := seccomp.Load(seccomp.Path(c.ConfigDir), h.opts.Env.EUID); err != nil {
		t.Errorf("seccomp profile: %v", err)
	}
	for _, n := range []string{"terok-gate.socket", "terok-gate.service", "terok-credential-proxy.socket", "terok-credential-proxy.service"} {
		if _, err := os.Stat(filepath.Join(h.home, ".config", "systemd", "user", n)); err != nil {
			t.Errorf("unit %s: %v", n, err)
		}
	}
	enables := h.callCount(t, "--user enable --now")
	if enables != 2 {
		t.Errorf("enable calls: %d, want 2", enables)
	}

	before := h.snapshot(t)
	res, out = h.setup(t, false)
	if res.Changed != 0 {
		t.Errorf("second setup changed %d steps:\n%s", res.Changed, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasSuffix(l, ": nothing to do") {
			t.Errorf("second setup line %q is not \"nothing to do\"", l)
		}
	}
	if d := diff(before, h.snapshot(t)); len(d) > 0 {
		t.Errorf("second setup changed files: %v", d)
	}
	if got := h.callCount(t, "--user enable --now"); got != enables {
		t.Errorf("second setup enabled sockets again (%d calls)", got)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	h := newHost(t)
	before := h.snapshot(t)
	res, out := h.setup(t, true)
	if res.Changed != 6 || !strings.Contains(out, "would write hook descriptor") || !strings.Contains(out, "would enable and start terok-gate.socket") {
		t.Errorf("dry run plan (%d changed):\n%s", res.Changed, out)
	}
	if d := diff(before, h.snapshot(t)); len(d) > 0 {
		t.Errorf("dry run changed files: %v", d)
	}
	if n := h.callCount(t, "--user enable"); n != 0 {
		t.Errorf("dry run enabled %d sockets", n)
	}
	// And a dry uninstall of a set-up host removes nothing, and plans the
	// same as the real one does.
	h.setup(t, false)
	before = h.snapshot(t)
	_, dryOut := h.uninstall(t, true, true)
	if !strings.Contains(dryOut, "would remove") {
		t.Errorf("dry uninstall plan:\n%s", dryOut)
	}
	if d := diff(before, h.snapshot(t)); len(d) > 0 {
		t.Errorf("dry uninstall changed files: %v", d)
	}
	_, realOut := h.uninstall(t, true, false)
	if got := strings.ReplaceAll(dryOut, ": would ", ": "); got != realOut {
		t.Errorf("the dry run planned\n%s\nthe real run did\n%s", dryOut, realOut)
	}
}

// A setup killed after any step is completed by the next: the host then
// equals one set up in a single run.
func TestInterruptedSetupIsCompleted(t *testing.T) {
	ref := newHost(t)
	ref.setup(t, false)
	want := len(ref.snapshot(t))
	for k := 0; k < 6; k++ {
		t.Run(fmt.Sprintf("killed after %d steps", k), func(t *testing.T) {
			h := newHost(t)
			if _, err := Run(context.Background(), h.setupSteps(t)[:k], false, &bytes.Buffer{}); err != nil {
				t.Fatal(err)
			}
			res, out := h.setup(t, false)
			if res.Changed != 6-k {
				t.Errorf("resumed setup changed %d steps, want %d:\n%s", res.Changed, 6-k, out)
			}
			if res, out := h.setup(t, false); res.Changed != 0 {
				t.Errorf("a third run still had work:\n%s", out)
			}
			if got := len(h.snapshot(t)); got != want {
				t.Errorf("%d paths after the resumed setup, a single run leaves %d", got, want)
			}
		})
	}
	// A file setup wrote and something else removed, and a directory whose
	// mode was loosened, are put back.
	h := newHost(t)
	h.setup(t, false)
	if err := os.Remove(filepath.Join(h.opts.Paths.UserHooksDir(), "terok-shield-poststop.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.opts.Cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	res, out := h.setup(t, false)
	if res.Changed != 2 || !strings.Contains(out, "chmod 0700") || !strings.Contains(out, "terok-shield-poststop.json") {
		t.Errorf("repair (%d changed):\n%s", res.Changed, out)
	}
}

func TestUninstallLeavesTheHostAsFound(t *testing.T) {
	for _, tc := range []struct {
		name      string
		conf      string // user containers.conf before setup ("" none)
		purge     bool
		keepState bool
	}{
		{"fresh host, purge", "", true, false},
		{"own containers.conf kept, purge", "# mine\n[engine]\ncgroup_manager = \"cgroupfs\"\n", true, false},
		{"no purge keeps the state", "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t)
			if tc.conf != "" {
				if err := os.MkdirAll(filepath.Dir(h.opts.Paths.UserContainersConf), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(h.opts.Paths.UserContainersConf, []byte(tc.conf), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := h.snapshot(t)
			h.setup(t, false)
			// Some state, as using the sandbox leaves.
			if err := os.WriteFile(filepath.Join(h.opts.Cfg.GateBasePath(), "tokens.json"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			h.uninstall(t, tc.purge, false)
			d := diff(before, h.snapshot(t))
			if tc.keepState {
				var rest []string
				for _, l := range d {
					if !strings.Contains(l, h.opts.Cfg.StateDir) && !strings.Contains(l, h.opts.Cfg.CredentialsDir) {
						rest = append(rest, l)
					}
				}
				if _, err := os.Stat(filepath.Join(h.opts.Cfg.GateBasePath(), "tokens.json")); err != nil {
					t.Errorf("uninstall without --purge removed the state: %v", err)
				}
				// The record stays, naming the directories still there.
				if rec, _ := h.opts.readRecord(); !containsPath(rec, h.opts.Cfg.StateDir) {
					t.Errorf("record after a keeping uninstall: %v", rec)
				}
				d = nil
				for _, l := range rest {
					if !strings.Contains(l, h.opts.Cfg.ConfigDir) && !strings.HasSuffix(l, "/.local") && !strings.HasSuffix(l, "/.config") && !strings.HasSuffix(l, "/.local/share") && !strings.HasSuffix(l, "/.local/share/terok") && !strings.HasSuffix(l, "/.config/terok") {
						d = append(d, l)
					}
				}
			}
			if len(d) > 0 {
				t.Errorf("after uninstall the host differs: %v", d)
			}
			if n := h.callCount(t, "--user disable --now"); n != 2 {
				t.Errorf("disable calls: %d, want 2", n)
			}
			if res, out := h.uninstall(t, tc.purge, false); res.Changed != 0 {
				t.Errorf("second uninstall had work:\n%s", out)
			}
			if tc.keepState {
				// A later purge finishes the job.
				h.uninstall(t, true, false)
				if d := diff(before, h.snapshot(t)); len(d) > 0 {
					t.Errorf("after the purge the host differs: %v", d)
				}
			}
		})
	}
}

func TestUninstallKeepsAnEditedConfig(t *testing.T) {
	h := newHost(t)
	h.setup(t, false)
	p := filepath.Join(h.opts.Cfg.ConfigDir, config.FileName)
	if err := os.WriteFile(p, []byte("gate_port = 9500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.uninstall(t, true, false)
	if data, err := os.ReadFile(p); err != nil || string(data) != "gate_port = 9500\n" {
		t.Errorf("the operator's config was not kept: %v %q", err, data)
	}
}

func TestPreflight(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bins     []string
		euid     int
		wantErr  []string
		wantNone bool
	}{
		{"all there", []string{"podman", "nft"}, 1000, nil, true},
		{"no podman, apt", []string{"nft", "apt-get"}, 1000, []string{"podman (package podman)", "sudo apt-get install -y podman"}, false},
		{"neither, apt, root", []string{"apt-get"}, 0, []string{"podman, nft", "package podman, nftables", ": apt-get install -y podman nftables"}, false},
		{"no nft, dnf", []string{"podman", "dnf"}, 1000, []string{"nft (package nftables)", "sudo dnf install -y nftables"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, b := range tc.bins {
				writeExec(t, filepath.Join(dir, b), "exit 0\n")
			}
			// No fallbacks: the real /usr/bin of this host must not answer.
			err := preflight(shield.Tools{Path: dir}, tc.euid, false)
			if tc.wantNone {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("missing tools were not reported")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func TestChooseScope(t *testing.T) {
	for _, tc := range []struct {
		user, system bool
		euid         int
		want         Scope
		err          bool
	}{
		{false, false, 1000, ScopeUser, false},
		{false, false, 0, ScopeSystem, false},
		{true, false, 1000, ScopeUser, false},
		{false, true, 0, ScopeSystem, false},
		{true, true, 0, "", true},
		{false, true, 1000, "", true},
		{true, false, 0, "", true},
	} {
		got, err := ChooseScope(tc.user, tc.system, tc.euid)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ChooseScope(%v, %v, %d) = %q, %v", tc.user, tc.system, tc.euid, got, err)
		}
	}
}

// Units are removed even when no user manager answers any more (a
// logged-out user): there is nothing to stop then, only files to remove.
func TestUninstallWithoutUserManager(t *testing.T) {
	h := newHost(t)
	h.setup(t, false)
	if err := os.WriteFile(filepath.Join(h.root, "systemd-state", "offline"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Setup now falls back to PID-file daemons; uninstall still finds the units.
	if _, ok := h.mgrs.Daemons(context.Background(), ScopeUser)[0].(pidDaemon); !ok {
		t.Fatal("without a user manager setup should choose PID-file daemons")
	}
	_, out := h.uninstall(t, true, false)
	units := filepath.Join(h.home, ".config", "systemd", "user")
	if _, err := os.Stat(units); !os.IsNotExist(err) {
		t.Errorf("unit directory left behind (%v):\n%s", err, out)
	}
	if n := h.callCount(t, "--user disable"); n != 0 {
		t.Errorf("%d disable calls to an absent manager", n)
	}
}

// newSystemHost is root's host in a temporary tree: every root moved there
// through the environment, root's systemd scripted like the user's.
func newSystemHost(t *testing.T) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the system scope writes files as root (seccomp.Install checks the real owner)")
	}
	h := newHost(t)
	r := h.root
	vars := map[string]string{
		"TEROK_SANDBOX_STATE_DIR":   filepath.Join(r, "var/lib/terok/sandbox"),
		"TEROK_SANDBOX_RUNTIME_DIR": filepath.Join(r, "run/terok/sandbox"),
		"TEROK_SANDBOX_CONFIG_DIR":  filepath.Join(r, "etc/terok/sandbox"),
		"TEROK_CREDENTIALS_DIR":     filepath.Join(r, "var/lib/terok/credentials"),
		"TEROK_CONFIG_DIR":          filepath.Join(r, "etc/terok"),
	}
	env := testkit.Env(vars, 0, h.home)
	cfg := config.Defaults(env)
	for k, v := range vars {
		if !strings.HasPrefix(v, r) {
			t.Fatalf("%s escapes the tree", k)
		}
	}
	bin := filepath.Join(r, "bin")
	sd := daemonctl.Systemd{Systemctl: filepath.Join(bin, "systemctl")}
	mgrs := NewDaemonManagers(cfg, env, nil)
	mgrs.PrivateTmpDirs = []string{filepath.Join(r, "private-tmp")}
	findBin := func(name string) (string, error) { return filepath.Join(bin, name), nil }
	mgrs.Gate.Systemd, mgrs.Gate.FindBinary = sd, findBin
	mgrs.Proxy.Systemd, mgrs.Proxy.FindBinary = sd, findBin
	mgrs.System = daemonctl.Systemd{Systemctl: sd.Systemctl, System: true}
	mgrs.SystemUnitDir = filepath.Join(r, "etc/systemd/system")
	h.mgrs = mgrs
	h.opts.Cfg, h.opts.Env, h.opts.Scope = cfg, env, ScopeSystem
	return h
}

func TestSystemScopeUsesRootsSystemd(t *testing.T) {
	h := newSystemHost(t)
	before := h.snapshotAll(t)
	o := h.opts
	o.Daemons = h.mgrs.Daemons(context.Background(), ScopeSystem)
	if _, ok := o.Daemons[0].(unitDaemon); !ok {
		t.Fatalf("with root's systemd running the daemons are units, got %T", o.Daemons[0])
	}
	var out bytes.Buffer
	res, err := Run(context.Background(), o.Steps(), false, &out)
	if err != nil || res.Changed != 6 {
		t.Fatalf("setup: %d changed, %v\n%s", res.Changed, err, out.String())
	}
	for _, n := range []string{"terok-gate.socket", "terok-gate.service", "terok-credential-proxy.socket", "terok-credential-proxy.service"} {
		data, err := os.ReadFile(filepath.Join(h.mgrs.SystemUnitDir, n))
		if err != nil {
			t.Errorf("system unit %s: %v", n, err)
		} else if strings.Contains(string(data), h.home) {
			t.Errorf("system unit %s names the user's home", n)
		}
	}
	if n := h.callCount(t, "--system enable --now"); n != 2 {
		t.Errorf("system enable calls: %d", n)
	}
	if n := h.callCount(t, "--user"); n != 0 {
		t.Errorf("the system scope called the user manager %d times", n)
	}
	if _, err := os.Stat(filepath.Join(h.opts.Paths.SystemHooksDirs[0], "terok-shield-createRuntime.json")); err != nil {
		t.Errorf("root's hook descriptor: %v", err)
	}
	out.Reset()
	if res, _ := Run(context.Background(), o.Steps(), false, &out); res.Changed != 0 {
		t.Errorf("second system setup:\n%s", out.String())
	}
	// The socket file a stopped socket unit leaves behind goes too.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.opts.Cfg.ProxySocket(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	out.Reset()
	steps := o.UninstallSteps(h.mgrs.RemovalDaemons(context.Background(), ScopeSystem), true)
	if _, err := Run(context.Background(), steps, false, &out); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out.String())
	}
	if d := diff(before, h.snapshotAll(t)); len(d) > 0 {
		t.Errorf("after uninstall --purge the host differs: %v", d)
	}
}

// snapshotAll is snapshot over the whole tree but the call log and the
// scripts.
func (h *host) snapshotAll(t *testing.T) map[string]string {
	t.Helper()
	snap := map[string]string{}
	snapshotInto(t, snap, h.root, func(p string) bool {
		return p == h.calls || strings.HasPrefix(p, filepath.Join(h.root, "bin"))
	})
	return snap
}

// A daemon where the hardened units cannot see it (PrivateTmp=) is
// refused before anything is written for it.
func TestUnitsRefuseADaemonInPrivateTmp(t *testing.T) {
	h := newHost(t)
	hidden := filepath.Join(h.root, "private-tmp")
	h.mgrs.PrivateTmpDirs = []string{hidden}
	h.mgrs.Gate.FindBinary = func(name string) (string, error) { return filepath.Join(hidden, "bin", name), nil }
	var out bytes.Buffer
	_, err := Run(context.Background(), h.setupSteps(t), false, &out)
	if err == nil || !strings.Contains(err.Error(), "PrivateTmp") || !strings.Contains(err.Error(), "gate units") {
		t.Fatalf("want the gate units refused, got %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(h.home, ".config", "systemd", "user", "terok-gate.socket")); !os.IsNotExist(err) {
		t.Errorf("a unit was written: %v", err)
	}
}
