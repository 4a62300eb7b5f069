package shield

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// The steps of PreStart, each on its own (the whole sequence is
// prestart_test.go's).

func TestValidateLaunch(t *testing.T) {
	ok := Config{Mode: shieldbundle.ModeInteractive, DecideTimeout: "30s", Project: "proj", Task: "t1", LoopbackPorts: []int{1, 65535}}
	if err := New(ok, Options{}).validateLaunch("c1", []string{"dev-standard"}); err != nil {
		t.Fatalf("valid launch refused: %v", err)
	}
	tests := []struct {
		name      string
		edit      func(c *Config)
		container string
		profiles  []string
		want      string
	}{
		{"container name", nil, "a,b", nil, ""},
		{"profile name", nil, "c1", []string{"ok", "../x"}, "Unsafe name: '../x'"},
		{"mode", func(c *Config) { c.Mode = "bogus" }, "c1", nil, ""},
		{"decide timeout", func(c *Config) { c.DecideTimeout = "soon" }, "c1", nil, ""},
		{"project", func(c *Config) { c.Project = "../p" }, "c1", nil, ""},
		{"task", func(c *Config) { c.Task = "a/b" }, "c1", nil, ""},
		{"port 0", func(c *Config) { c.LoopbackPorts = []int{9418, 0} }, "c1", nil, "loopback port 0 out of range"},
		{"port 65536", func(c *Config) { c.LoopbackPorts = []int{65536} }, "c1", nil, "loopback port 65536 out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			if tt.edit != nil {
				tt.edit(&c)
			}
			err := New(c, Options{}).validateLaunch(tt.container, tt.profiles)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLaunchStateDir(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	got, err := New(Config{StateDir: filepath.Join(link, "task", "shield")}, Options{}).launchStateDir()
	if err != nil {
		t.Fatal(err)
	}
	resolved, _ := filepath.EvalSymlinks(real)
	if want := filepath.Join(resolved, "task", "shield"); got != want {
		t.Fatalf("state dir = %q, want %q (absolute, link resolved, missing part kept)", got, want)
	}
	for _, bad := range []string{"a,b", "a\nb"} {
		if _, err := New(Config{StateDir: filepath.Join(real, bad)}, Options{}).launchStateDir(); err == nil {
			t.Errorf("state dir with %q accepted", bad)
		}
	}
}

func TestPrepareStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shield")
	hook := filepath.Join(t.TempDir(), "terok-shield-hook")
	writeText(t, hook, "")
	hooksDir, err := New(Config{}, Options{HookBinary: hook}).prepareStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if hooksDir != filepath.Join(dir, shieldbundle.HooksSubdir) {
		t.Fatalf("hooks dir = %q", hooksDir)
	}
	for _, d := range []string{dir, hooksDir} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v %v, want a 0700 directory", d, st, err)
		}
	}
	if cur, err := os.Readlink(filepath.Join(dir, shieldbundle.HookBinary)); err != nil || cur != hook {
		t.Fatalf("hook link = %q, %v", cur, err)
	}
	for _, stage := range []string{"createRuntime", "poststop"} {
		if !exists(filepath.Join(hooksDir, "terok-shield-"+stage+".json")) {
			t.Errorf("no %s descriptor", stage)
		}
	}
	if _, err := New(Config{}, Options{}).prepareStateDir(filepath.Join(t.TempDir(), "s")); err == nil || !strings.Contains(err.Error(), "terok-shield-hook not found") {
		t.Fatalf("no hook binary: err = %v", err)
	}
}

func TestLaunchNetwork(t *testing.T) {
	got, err := New(Config{}, Options{EUID: 1000}).launchNetwork(infoPasta)
	if want := (launchNet{mode: podmaninfo.Pasta, dns: "169.254.1.1", tier: TierResolver}); err != nil || got != want {
		t.Fatalf("rootless pasta: %+v, %v; want %+v", got, err, want)
	}
	got, err = New(Config{UpstreamDNS: "2001:DB8::53"}, Options{EUID: 0}).launchNetwork(infoPasta)
	if want := (launchNet{mode: podmaninfo.Slirp4netns, dns: "2001:db8::53", tier: TierResolver}); err != nil || got != want {
		t.Fatalf("root with upstream: %+v, %v; want %+v", got, err, want)
	}
	if _, err := New(Config{UpstreamDNS: "198.51.100.0/24"}, Options{EUID: 0}).launchNetwork(infoSlirp); err == nil {
		t.Fatal("a network as upstream DNS accepted")
	}
}

func TestWriteSettingFiles(t *testing.T) {
	dir := t.TempDir()
	s := New(Config{Mode: shieldbundle.ModeLearn}, Options{})
	if err := s.writeSettingFiles(dir, launchNet{mode: podmaninfo.Slirp4netns, dns: "10.0.2.3", tier: TierResolver}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"upstream.dns": "10.0.2.3\n", "dns.tier": "resolver\n", "network.mode": "slirp4netns\n", "shield.mode": "learn\n"} {
		if got := readState(t, dir, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// ruleset.nft is written atomically without fsync (the digest annotation
// stands for durability); an unchanged file is not rewritten, and a new
// launch drops the ruleset.nft.sha256 of the previous container's live
// changes.
func TestPreStartRulesetNotFsynced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ruleset.nft")
	if err := writeBundleFile(path, []byte("table\n"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeBundleFile(path, []byte("table\n"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	st2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(st1, st2) {
		t.Error("an unchanged ruleset.nft was replaced")
	}
	if err := writeBundleFile(filepath.Join(dir, "missing", "ruleset.nft"), []byte("table\n"), 0o600, false); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRulesetDigest), []byte(shieldbundle.RulesetDigest(nil)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := writeResolverFiles(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, shieldbundle.FileRulesetDigest)); !os.IsNotExist(err) {
		t.Fatalf("ruleset.nft.sha256 survived a new launch: %v", err)
	}
}

func TestWriteModeFiles(t *testing.T) {
	dir := t.TempDir()
	if err := New(Config{Mode: shieldbundle.ModeInteractive, DecideTimeout: "20s"}, Options{}).writeModeFiles(dir); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, dir, shieldbundle.FileInteractive); got != "nflog\n" {
		t.Errorf("interactive = %q", got)
	}
	if got := readState(t, dir, shieldbundle.FileDecideTimeout); got != "20s\n" {
		t.Errorf("decide.timeout = %q", got)
	}
	// Interactive without a timeout: the resolver's default, no file.
	if err := New(Config{Mode: shieldbundle.ModeInteractive}, Options{}).writeModeFiles(dir); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(dir, shieldbundle.FileDecideTimeout)) || !exists(filepath.Join(dir, shieldbundle.FileInteractive)) {
		t.Error("interactive without a timeout: want the marker and no decide.timeout")
	}
	if err := New(Config{}, Options{}).writeModeFiles(dir); err != nil {
		t.Fatal(err)
	}
	if exists(filepath.Join(dir, shieldbundle.FileInteractive)) {
		t.Error("enforce launch kept the interactive marker")
	}
}

func TestWriteResolverFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range staleLaunchFiles {
		writeText(t, filepath.Join(dir, f), "old\n")
	}
	writeText(t, filepath.Join(dir, shieldbundle.FileDnsmasqPID), "12345\n")
	rc, err := writeResolverFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rc != filepath.Join(dir, shieldbundle.FileResolvConf) {
		t.Fatalf("resolv.conf path = %q", rc)
	}
	if st, err := os.Stat(rc); err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("resolv.conf: %v %v, want 0644 (read by every user in the container)", st, err)
	}
	if got := readState(t, dir, shieldbundle.FileResolvConf); got != shieldbundle.ResolvConf {
		t.Errorf("resolv.conf = %q", got)
	}
	for _, f := range staleLaunchFiles {
		if exists(filepath.Join(dir, f)) {
			t.Errorf("%s of the older launch still present", f)
		}
	}
	if !exists(filepath.Join(dir, shieldbundle.FileDnsmasqPID)) {
		t.Error("dnsmasq.pid removed: a leaked dnsmasq could no longer be found")
	}
}

func TestHooksArgs(t *testing.T) {
	paths, _ := testPaths(t)
	persist := podmaninfo.Info{Version: hooksPersistFrom, OK: true}
	if got, err := New(Config{}, Options{Paths: paths}).hooksArgs("c1", persist, "/s/hooks"); err != nil || !reflect.DeepEqual(got, []string{"--hooks-dir", "/s/hooks"}) {
		t.Fatalf("hooks persist: %q, %v", got, err)
	}
	_, err := New(Config{}, Options{Paths: paths}).hooksArgs("c1", infoSlirp, "/s/hooks")
	var setup *SetupNeededError
	if !errors.As(err, &setup) || setup.PodmanVersion != "4.3.1" {
		t.Fatalf("no global hooks: err = %v, want a SetupNeededError for 4.3.1", err)
	}
	hookDir := t.TempDir()
	hook := filepath.Join(hookDir, "terok-shield-hook")
	fakeBin(t, hookDir, "terok-shield-hook", "echo 5\n")
	if _, err := Setup(t.Context(), SetupOptions{User: true, HookBinary: hook, Paths: paths}); err != nil {
		t.Fatal(err)
	}
	if got, err := New(Config{}, Options{Paths: paths}).hooksArgs("c1", infoSlirp, "/s/hooks"); err != nil || got != nil {
		t.Fatalf("global hooks: %q, %v; want no arguments", got, err)
	}
}

func TestPodmanArgs(t *testing.T) {
	s := New(Config{LoopbackPorts: []int{9418, 18731}, AuditEnabled: true, Mode: shieldbundle.ModeLearn, Project: "proj", TaskEnds: "/s/task-ends"}, Options{})
	got := s.podmanArgs(launchArgs{
		container: "c1", profiles: []string{"a", "b"}, stateDir: "/s", resolvConf: "/s/resolv.conf",
		net:   launchNet{mode: podmaninfo.Slirp4netns, dns: "10.0.2.3", tier: TierResolver},
		hooks: []string{"--hooks-dir", "/s/hooks"}, rulesetDigest: "sha256:" + strings.Repeat("ab", 32),
	})
	want := append(NetworkArgs(podmaninfo.Slirp4netns),
		"--volume", "/s/resolv.conf:/etc/resolv.conf:ro,Z",
		"--annotation", "terok.shield.profiles=a:b",
		"--annotation", "terok.shield.name=c1",
		"--annotation", "terok.shield.state_dir=/s",
		"--annotation", "terok.shield.loopback_ports=9418:18731",
		"--annotation", "terok.shield.version=5",
		"--annotation", "terok.shield.audit_enabled=true",
		"--annotation", "terok.shield.upstream_dns=10.0.2.3",
		"--annotation", "terok.shield.dns_tier=resolver",
		"--annotation", "terok.shield.interactive=false",
		"--annotation", "terok.shield.mode=learn",
		"--annotation", "terok.shield.ruleset_digest=sha256:"+strings.Repeat("ab", 32),
		"--annotation", "terok.shield.project=proj",
		"--annotation", "terok.shield.task_ends=/s/task-ends",
		"--hooks-dir", "/s/hooks",
		"--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("args:\n got %q\nwant %q", got, want)
	}
}
