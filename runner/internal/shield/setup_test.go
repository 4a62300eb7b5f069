package shield

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// testPaths is a HostPaths rooted in a temporary tree: a home, a user
// containers.conf, two system confs and podman's built-in hooks dir (missing
// unless created). <root>/etc-hooks.d plays /etc/containers/oci/hooks.d,
// which podman does not read.
func testPaths(t testing.TB) (HostPaths, string) {
	t.Helper()
	root := t.TempDir()
	home := filepath.Join(root, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	return HostPaths{
		Home:                  home,
		UserContainersConf:    filepath.Join(home, ".config", "containers", "containers.conf"),
		SystemContainersConfs: []string{filepath.Join(root, "etc-containers.conf"), filepath.Join(root, "usr-containers.conf")},
		SystemHooksDirs:       []string{filepath.Join(root, "usr-hooks.d")},
	}, root
}

func mkdir(t testing.TB, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeText(t *testing.T, p, s string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHooksDirs(t *testing.T) {
	tests := []struct {
		name   string
		user   string
		etc    string
		usr    string
		env    string // content of $CONTAINERS_CONF ("" → unset)
		root   bool
		mkdirs []int // system hooks dirs that exist
		want   func(p HostPaths, root string) []string
	}{
		{"defaults: the built-in dir", "", "", "", "", false, []int{0}, func(p HostPaths, r string) []string { return []string{p.SystemHooksDirs[0]} }},
		{"defaults: the built-in dir even if missing", "", "", "", "", false, nil, func(p HostPaths, r string) []string { return []string{p.SystemHooksDirs[0]} }},
		{"user string with tilde", "[engine]\nhooks_dir = \"~/hooks\"\n", "[engine]\nhooks_dir=[\"/etc/x\"]\n", "", "", false, nil,
			func(p HostPaths, r string) []string { return []string{filepath.Join(p.Home, "hooks")} }},
		{"user list", "[engine]\nhooks_dir = [\"/a\", \"~/b\"]\n", "", "", "", false, nil, func(p HostPaths, r string) []string { return []string{"/a", filepath.Join(p.Home, "b")} }},
		{"user invalid toml falls through to etc", "[engine\nhooks_dir = 3", "[engine]\nhooks_dir=[\"/etc/x\"]\n", "", "", false, nil, func(HostPaths, string) []string { return []string{"/etc/x"} }},
		{"user without hooks_dir, usr has it", "[engine]\nruntime=\"runc\"\n", "", "[engine]\nhooks_dir=[\"/usr/x\"]\n", "", false, nil, func(HostPaths, string) []string { return []string{"/usr/x"} }},
		{"etc before usr", "", "[engine]\nhooks_dir=[\"/etc/x\"]\n", "[engine]\nhooks_dir=[\"/usr/x\"]\n", "", false, nil, func(HostPaths, string) []string { return []string{"/etc/x"} }},
		{"root ignores the user file", "[engine]\nhooks_dir = [\"/a\"]\n", "", "", "", true, []int{0}, func(p HostPaths, r string) []string { return []string{p.SystemHooksDirs[0]} }},
		{"CONTAINERS_CONF replaces all", "[engine]\nhooks_dir = [\"/a\"]\n", "[engine]\nhooks_dir=[\"/etc/x\"]\n", "", "[engine]\nhooks_dir=[\"/test/hooks\"]\n", false, nil, func(HostPaths, string) []string { return []string{"/test/hooks"} }},
		{"CONTAINERS_CONF without hooks_dir", "[engine]\nhooks_dir = [\"/a\"]\n", "", "", "[engine]\nruntime=\"runc\"\n", false, []int{0}, func(p HostPaths, r string) []string { return p.SystemHooksDirs }},
		{"wrong type ignored", "[engine]\nhooks_dir = 5\n", "", "", "", false, []int{0}, func(p HostPaths, r string) []string { return []string{p.SystemHooksDirs[0]} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, root := testPaths(t)
			p.Root = tt.root
			if tt.user != "" {
				writeText(t, p.UserContainersConf, tt.user)
			}
			if tt.etc != "" {
				writeText(t, p.SystemContainersConfs[0], tt.etc)
			}
			if tt.usr != "" {
				writeText(t, p.SystemContainersConfs[1], tt.usr)
			}
			if tt.env != "" {
				p.ContainersConfEnv = filepath.Join(root, "test.conf")
				writeText(t, p.ContainersConfEnv, tt.env)
			}
			for _, i := range tt.mkdirs {
				mkdir(t, p.SystemHooksDirs[i])
			}
			if got, want := p.HooksDirs(), tt.want(p, root); !reflect.DeepEqual(got, want) {
				t.Fatalf("HooksDirs = %q, want %q", got, want)
			}
		})
	}
}

func TestEnsureUserHooksDir(t *testing.T) {
	tests := []struct {
		name        string
		existing    *string
		wantChanged bool
		wantWarn    bool
		check       func(t *testing.T, text string, p HostPaths, target string)
	}{
		{"missing file", nil, true, false, func(t *testing.T, text string, p HostPaths, target string) {
			want := "[engine]\nhooks_dir = [" + q(p.SystemHooksDirs[0]) + ", " + q(target) + "]\n"
			if text != want {
				t.Fatalf("got %q want %q", text, want)
			}
		}},
		{"engine section present", ptr("# my settings\n[containers]\nlog_driver = \"k8s-file\"\n\n  [engine]  \n# keep me\nruntime = \"runc\"\n"), true, false,
			func(t *testing.T, text string, p HostPaths, target string) {
				want := "# my settings\n[containers]\nlog_driver = \"k8s-file\"\n\n  [engine]  \nhooks_dir = [" + q(p.SystemHooksDirs[0]) + ", " + q(target) + "]\n# keep me\nruntime = \"runc\"\n"
				if text != want {
					t.Fatalf("got %q want %q", text, want)
				}
			}},
		{"no engine section, no final newline", ptr("[containers]\nlog_driver = \"k8s-file\""), true, false,
			func(t *testing.T, text string, p HostPaths, target string) {
				if !strings.HasPrefix(text, "[containers]\nlog_driver = \"k8s-file\"\n\n[engine]\nhooks_dir = [") {
					t.Fatalf("got %q", text)
				}
			}},
		{"already has target with tilde", ptr("[engine]\nhooks_dir = [\"~/.local/share/containers/oci/hooks.d\"]\n"), false, false, nil},
		{"hooks_dir without target", ptr("[engine]\nhooks_dir = [\"/opt/hooks\"]\n"), false, true, func(t *testing.T, text string, p HostPaths, target string) {
			if text != "[engine]\nhooks_dir = [\"/opt/hooks\"]\n" {
				t.Fatalf("file changed: %q", text)
			}
		}},
		{"hooks_dir as string", ptr("[engine]\nhooks_dir = \"/opt/hooks\"\n"), false, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPaths(t)
			mkdir(t, p.SystemHooksDirs[0])
			mkdir(t, filepath.Join(filepath.Dir(p.SystemHooksDirs[0]), "etc-hooks.d")) // not read by podman, not listed
			target := p.UserHooksDir()
			if tt.existing != nil {
				writeText(t, p.UserContainersConf, *tt.existing)
			}
			changed, warn, err := EnsureUserHooksDir(p, target)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tt.wantChanged || (warn != "") != tt.wantWarn {
				t.Fatalf("changed=%v warn=%q", changed, warn)
			}
			if tt.wantWarn && (!strings.Contains(warn, p.UserContainersConf) || !strings.Contains(warn, "/opt/hooks")) {
				t.Fatalf("warning does not name the file and list: %q", warn)
			}
			data, _ := os.ReadFile(p.UserContainersConf)
			if tt.check != nil {
				tt.check(t, string(data), p, target)
			}
			// After setup, podman reads the target and keeps the defaults.
			if tt.wantChanged {
				dirs := p.HooksDirs()
				if !containsPath(dirs, target) || !containsPath(dirs, p.SystemHooksDirs[0]) || len(dirs) != 2 {
					t.Fatalf("HooksDirs after setup = %q", dirs)
				}
			}
		})
	}
	t.Run("invalid toml refused", func(t *testing.T) {
		p, _ := testPaths(t)
		writeText(t, p.UserContainersConf, "[engine\n")
		if _, _, err := EnsureUserHooksDir(p, p.UserHooksDir()); err == nil || !strings.Contains(err.Error(), "not valid TOML") {
			t.Fatalf("err = %v", err)
		}
		data, _ := os.ReadFile(p.UserContainersConf)
		if string(data) != "[engine\n" {
			t.Fatalf("file changed: %q", data)
		}
	})
}

func ptr(s string) *string { return &s }

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestSetup(t *testing.T) {
	ctx := context.Background()
	binDir := t.TempDir()
	hook := filepath.Join(binDir, "terok-shield-hook")
	fakeBin(t, binDir, "terok-shield-hook", "[ \"$1\" = --bundle-version ] && echo 4\n")

	t.Run("flags", func(t *testing.T) {
		p, _ := testPaths(t)
		_, err := Setup(ctx, SetupOptions{Root: true, User: true, HookBinary: hook, Paths: p})
		if err == nil || err.Error() != "--root and --user are mutually exclusive" {
			t.Fatalf("both: %v", err)
		}
		_, err = Setup(ctx, SetupOptions{HookBinary: hook, Paths: p})
		if err == nil || !strings.Contains(err.Error(), "--root") || !strings.Contains(err.Error(), "--user") || !strings.Contains(err.Error(), "sudo") {
			t.Fatalf("neither: %v", err)
		}
		_, err = Setup(ctx, SetupOptions{User: true, Paths: p})
		if err == nil || !strings.Contains(err.Error(), "terok-shield-hook not found") {
			t.Fatalf("no hook: %v", err)
		}
	})

	t.Run("user", func(t *testing.T) {
		p, _ := testPaths(t)
		mkdir(t, p.SystemHooksDirs[0])
		res, err := Setup(ctx, SetupOptions{User: true, HookBinary: hook, Paths: p, EUID: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if res.Dir != p.UserHooksDir() || !res.ConfChanged || res.Warning != "" {
			t.Fatalf("res = %+v", res)
		}
		checkInstalled(t, res.Dir, hook)
		if got := p.GlobalHookDir(); got != res.Dir {
			t.Fatalf("GlobalHookDir = %q", got)
		}
		// Idempotent.
		res, err = Setup(ctx, SetupOptions{User: true, HookBinary: hook, Paths: p, EUID: 1000})
		if err != nil || res.ConfChanged {
			t.Fatalf("second run: %+v %v", res, err)
		}
		// As root, --user warns that root's podman ignores it.
		res, err = Setup(ctx, SetupOptions{User: true, HookBinary: hook, Paths: p, EUID: 0})
		if err != nil || !strings.Contains(res.Warning, "setup --root") {
			t.Fatalf("root --user: %+v %v", res, err)
		}
	})

	t.Run("user with CONTAINERS_CONF warns", func(t *testing.T) {
		p, root := testPaths(t)
		p.ContainersConfEnv = filepath.Join(root, "c.conf")
		writeText(t, p.ContainersConfEnv, "[engine]\n")
		res, err := Setup(ctx, SetupOptions{User: true, HookBinary: hook, Paths: p})
		if err != nil || !strings.Contains(res.Warning, "CONTAINERS_CONF") {
			t.Fatalf("res %+v err %v", res, err)
		}
	})

	t.Run("root as root", func(t *testing.T) {
		// The built-in directory podman reads is the target even when it
		// does not exist yet and another candidate does.
		p, root := testPaths(t)
		etc := filepath.Join(root, "etc-hooks.d")
		mkdir(t, etc)
		res, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 0})
		if err != nil {
			t.Fatal(err)
		}
		if res.Dir != p.SystemHooksDirs[0] {
			t.Fatalf("dir %s", res.Dir)
		}
		checkInstalled(t, res.Dir, hook)
		if p.GlobalHookDir() != res.Dir {
			t.Fatalf("installed hooks not detected")
		}
	})

	t.Run("hooks in a directory podman does not read are not installed", func(t *testing.T) {
		// The lead's repro: hooks in /etc/containers/oci/hooks.d, no
		// hooks_dir configured: podman never runs them.
		p, root := testPaths(t)
		etc := filepath.Join(root, "etc-hooks.d")
		mkdir(t, etc)
		if err := writeHookFiles(etc, hook); err != nil {
			t.Fatal(err)
		}
		if d := p.GlobalHookDir(); d != "" {
			t.Fatalf("hooks in a directory podman does not read counted as installed: %s", d)
		}
		if r := CheckEnvironment(ctx, Tools{Path: t.TempDir()}, infoSlirp, p); r.Health != HealthSetupNeeded {
			t.Fatalf("check health %s", r.Health)
		}
	})

	t.Run("user list keeps the system configuration's hooks_dir", func(t *testing.T) {
		p, _ := testPaths(t)
		writeText(t, p.SystemContainersConfs[0], "[engine]\nhooks_dir = [\"/opt/site-hooks\"]\n")
		if got, want := p.UserHooksDirList("/u"), []string{"/opt/site-hooks", "/u"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("list %q want %q", got, want)
		}
	})

	t.Run("root follows the configured hooks_dir", func(t *testing.T) {
		p, root := testPaths(t)
		p.ContainersConfEnv = filepath.Join(root, "c.conf")
		want := filepath.Join(root, "test-hooks")
		writeText(t, p.ContainersConfEnv, "[engine]\nhooks_dir = [\""+want+"\"]\n")
		res, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 0})
		if err != nil || res.Dir != want {
			t.Fatalf("res %+v err %v", res, err)
		}
		checkInstalled(t, want, hook)
		if p.GlobalHookDir() != want {
			t.Fatal("not found by detection")
		}
	})

	t.Run("root via sudo", func(t *testing.T) {
		p, _ := testPaths(t)
		target := p.SystemHooksDirs[0]
		sudoDir := t.TempDir()
		log := filepath.Join(sudoDir, "log")
		// A sudo that records and runs its command.
		fakeBin(t, sudoDir, "sudo", "echo \"$@\" >> "+log+"\nexec \"$@\"\n")
		res, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 1000, Tools: Tools{Path: sudoDir + ":/usr/bin:/bin"}})
		if err != nil || res.Dir != target {
			t.Fatalf("res %+v err %v", res, err)
		}
		checkInstalled(t, target, hook)
		data, _ := os.ReadFile(log)
		if !strings.HasPrefix(string(data), "mkdir -p "+target+"\ncp ") || !strings.Contains(string(data), "rm -f "+filepath.Join(target, "terok-shield-hook")) {
			t.Fatalf("sudo calls: %s", data)
		}
		// A failing sudo is an error.
		fakeBin(t, sudoDir, "sudo", "echo denied >&2; exit 1\n")
		if _, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 1000, Tools: Tools{Path: sudoDir}}); err == nil || !strings.Contains(err.Error(), "denied") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("refuses a hook others can change", func(t *testing.T) {
		p, _ := testPaths(t)
		dir := t.TempDir()
		weak := filepath.Join(dir, "terok-shield-hook")
		fakeBin(t, dir, "terok-shield-hook", "exit 0\n")
		if err := os.Chmod(weak, 0o777); err != nil {
			t.Fatal(err)
		}
		_, err := Setup(ctx, SetupOptions{User: true, HookBinary: weak, Paths: p, EUID: 1000})
		if err == nil || !strings.Contains(err.Error(), "writable by its group") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(p.UserHooksDir(), "terok-shield-createRuntime.json")); err == nil {
			t.Fatal("a descriptor was written for a refused hook")
		}
	})

	t.Run("replaces the copy an older setup left", func(t *testing.T) {
		p, _ := testPaths(t)
		target := p.SystemHooksDirs[0]
		mkdir(t, target)
		fakeBin(t, target, "terok-shield-hook", "exit 0\n")
		res, err := Setup(ctx, SetupOptions{Root: true, HookBinary: hook, Paths: p, EUID: 0})
		if err != nil {
			t.Fatal(err)
		}
		checkInstalled(t, res.Dir, hook)
	})
}

// checkInstalled: both descriptors in dir name hook (the installed
// executable; setup copies nothing into hooks.d) with a timeout.
func checkInstalled(t *testing.T, dir, hook string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "terok-shield-hook")); err == nil {
		t.Fatalf("setup copied the hook into %s", dir)
	}
	for _, stage := range []string{"createRuntime", "poststop"} {
		data, err := os.ReadFile(filepath.Join(dir, "terok-shield-"+stage+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Hook struct {
				Path    string   `json:"path"`
				Args    []string `json:"args"`
				Timeout int      `json:"timeout"`
			} `json:"hook"`
			When struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"when"`
			Stages []string `json:"stages"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Hook.Path != hook || d.Hook.Timeout <= 0 || !reflect.DeepEqual(d.Hook.Args, []string{"terok-shield-hook", stage}) ||
			!reflect.DeepEqual(d.Stages, []string{stage}) || d.When.Annotations["terok.shield.profiles"] != ".*" {
			t.Fatalf("descriptor %s: %s", stage, data)
		}
	}
}
