package shield

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

type prestartEnv struct {
	tools    Tools
	paths    HostPaths
	hook     string
	stateDir string
	profiles string
}

// newPrestartEnv builds an empty tool directory (nothing is resolved on
// the host any more), a hooks setup (installed or not) and a user profile
// directory.
func newPrestartEnv(t *testing.T, globalHooks bool) prestartEnv {
	t.Helper()
	bin := t.TempDir()
	paths, _ := testPaths(t)
	hookDir := t.TempDir()
	hook := filepath.Join(hookDir, "terok-shield-hook")
	fakeBin(t, hookDir, "terok-shield-hook", "echo 5\n")
	if globalHooks {
		if _, err := Setup(context.Background(), SetupOptions{User: true, HookBinary: hook, Paths: paths}); err != nil {
			t.Fatal(err)
		}
	}
	profiles := t.TempDir()
	writeText(t, filepath.Join(profiles, "test.txt"), "# test profile\nok.example.com\n198.51.100.0/24\n2001:db8::1\n*.wild.example.org\n")
	return prestartEnv{tools: Tools{Path: bin}, paths: paths, hook: hook, stateDir: filepath.Join(t.TempDir(), "task", "shield"), profiles: profiles}
}

func (e prestartEnv) shield(euid int, info podmaninfo.Info, audit bool) *Shield {
	log, _ := testLog()
	return New(Config{
		StateDir: e.stateDir, DefaultProfiles: []string{"test"}, LoopbackPorts: []int{9418, 18731, 18732},
		AuditEnabled: audit, ProfilesDir: e.profiles,
	}, Options{Tools: e.tools, Paths: e.paths, HookBinary: e.hook, EUID: euid, Log: log, Info: &info,
		HostAddrs: func() []string { return nil }})
}

var (
	infoSlirp = podmaninfo.Info{Version: podmaninfo.Version{4, 3, 1}, RootlessNetworkCmd: "slirp4netns", OK: true}
	infoPasta = podmaninfo.Info{Version: podmaninfo.Version{5, 6, 0}, RootlessNetworkCmd: "pasta", OK: true}
)

func readState(t *testing.T, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(data)
}

func TestPreStartArgs(t *testing.T) {
	slirpNet := []string{"--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2"}
	pastaNet := []string{"--network", "pasta:--map-host-loopback,169.254.1.2", "--add-host", "host.containers.internal:169.254.1.2"}
	tests := []struct {
		name     string
		euid     int
		info     podmaninfo.Info
		upstream string // shield_upstream_dns
		wantNet  []string
		wantDNS  string
		wantMode string
	}{
		{"rootless slirp", 1000, infoSlirp, "", slirpNet, "10.0.2.3", "slirp4netns"},
		{"rootless pasta", 1000, infoPasta, "", pastaNet, "169.254.1.1", "pasta"},
		{"rootless unknown mode is pasta", 1000, podmaninfo.Info{}, "", pastaNet, "169.254.1.1", "pasta"},
		// The rootful decision: slirp4netns with host loopback, like rootless,
		// even when podman would report pasta.
		{"root is slirp4netns", 0, infoPasta, "", slirpNet, "10.0.2.3", "slirp4netns"},
		{"configured forwarder", 0, infoSlirp, "198.51.100.53", slirpNet, "198.51.100.53", "slirp4netns"},
		{"configured IPv6 forwarder and pasta", 1000, infoPasta, "2001:DB8::53", pastaNet, "2001:db8::53", "pasta"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrestartEnv(t, true)
			s := e.shield(tt.euid, tt.info, true)
			s.cfg.UpstreamDNS = tt.upstream
			args, err := s.PreStart(context.Background(), "proj-task-1", []string{"test", "dev-node"})
			if err != nil {
				t.Fatal(err)
			}
			dir, _ := filepath.EvalSymlinks(e.stateDir)
			// The digest annotation names the exact bytes of the
			// ruleset.nft the hook will read (docs/shield-hook.md,
			// Ruleset digest).
			rules, err := os.ReadFile(filepath.Join(dir, "ruleset.nft"))
			if err != nil {
				t.Fatal(err)
			}
			want := append([]string{}, tt.wantNet...)
			want = append(want, "--volume", dir+"/resolv.conf:/etc/resolv.conf:ro,Z",
				"--annotation", "terok.shield.profiles=test:dev-node",
				"--annotation", "terok.shield.name=proj-task-1",
				"--annotation", "terok.shield.state_dir="+dir,
				"--annotation", "terok.shield.loopback_ports=9418:18731:18732",
				"--annotation", "terok.shield.version=5",
				"--annotation", "terok.shield.audit_enabled=true",
				"--annotation", "terok.shield.upstream_dns="+tt.wantDNS,
				"--annotation", "terok.shield.dns_tier=resolver",
				"--annotation", "terok.shield.interactive=false",
				"--annotation", "terok.shield.mode=enforce",
				"--annotation", "terok.shield.ruleset_digest="+shieldbundle.RulesetDigest(rules),
				"--cap-drop", "NET_ADMIN", "--cap-drop", "NET_RAW")
			if !reflect.DeepEqual(args, want) {
				t.Fatalf("args:\n got %q\nwant %q", args, want)
			}
			for _, a := range args {
				if strings.HasPrefix(a, "terok.shield.") && strings.Contains(a, ",") {
					t.Fatalf("annotation with a comma breaks podman 4.x: %q", a)
				}
			}
			// Bundle files.
			for f, w := range map[string]string{
				"upstream.dns": tt.wantDNS + "\n", "dns.tier": "resolver\n", "network.mode": tt.wantMode + "\n",
				"resolv.conf": "nameserver 127.0.0.1\noptions ndots:0\n",
				// Explicit entries only; domains for the resolver, none resolved here.
				"profile.allowed": "198.51.100.0/24\n2001:db8::1\n",
			} {
				if got := readState(t, dir, f); got != w {
					t.Errorf("%s = %q, want %q", f, got, w)
				}
			}
			if got := readState(t, dir, "profile.domains"); !strings.HasPrefix(got, "ok.example.com\n*.wild.example.org\nregistry.npmjs.org\n") {
				t.Errorf("profile.domains = %q", got)
			}
			if st, err := os.Stat(filepath.Join(dir, "resolv.conf")); err != nil || st.Mode().Perm() != 0o644 {
				t.Errorf("resolv.conf mode: %v %v", st.Mode(), err)
			}
			for _, d := range []string{dir, filepath.Join(dir, "hooks")} {
				if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
					t.Errorf("%s mode: %v %v", d, st.Mode(), err)
				}
			}
			if target, err := os.Readlink(filepath.Join(dir, "terok-shield-hook")); err != nil || target != e.hook {
				t.Errorf("hook link %q %v", target, err)
			}
			desc := readState(t, dir, "hooks/terok-shield-createRuntime.json")
			if !strings.Contains(desc, filepath.Join(dir, "terok-shield-hook")) {
				t.Errorf("descriptor: %s", desc)
			}
			rs := readState(t, dir, "ruleset.nft")
			if errs := ruleset.VerifyHook(rs, false); len(errs) > 0 {
				t.Errorf("ruleset.nft does not verify: %v\n%s", errs, rs)
			}
			if !strings.Contains(rs, "udp dport 53 "+map[bool]string{false: "ip", true: "ip6"}[strings.Contains(tt.wantDNS, ":")]+" daddr "+tt.wantDNS+" accept") {
				t.Errorf("ruleset lacks DNS %s:\n%s", tt.wantDNS, rs)
			}
			if strings.Contains(rs, "add element inet terok_shield dns_v") {
				t.Errorf("pre-start learned addresses:\n%s", rs)
			}
			slirp := tt.wantMode == "slirp4netns"
			if hasGW := strings.Contains(rs, "add element inet terok_shield gateway_v4 { 10.0.2.2 }"); hasGW != slirp {
				t.Errorf("slirp gateway elements present=%v:\n%s", hasGW, rs)
			}
			// The pasta host-loopback rules only where 169.254.1.2 is the host.
			if hasHostLo := strings.Contains(rs, "ip daddr 169.254.1.2 accept"); hasHostLo == slirp {
				t.Errorf("host-loopback rules present=%v in %s:\n%s", hasHostLo, tt.wantMode, rs)
			}
			audit := readState(t, dir, "audit.jsonl")
			if !strings.Contains(audit, `"action":"setup","detail":"podman `) || !strings.Contains(audit, `"detail":"profiles=test,dev-node"`) {
				t.Errorf("audit: %s", audit)
			}
		})
	}
}

// TestPreStartCleansOldBundle: a task relaunched after an older version (or
// after `shield down`) keeps no dnsmasq files, no cache key and no open DNS.
func TestPreStartCleansOldBundle(t *testing.T) {
	e := newPrestartEnv(t, true)
	if err := mkdirPrivate(e.stateDir); err != nil {
		t.Fatal(err)
	}
	stale := []string{"dnsmasq.conf", "dnsmasq.log", "resolver.open", "profile.allowed.key"}
	// dnsmasq.pid is kept: a leaked old dnsmasq stays findable.
	writeText(t, filepath.Join(e.stateDir, "dnsmasq.pid"), "12345\n")
	for _, f := range stale {
		writeText(t, filepath.Join(e.stateDir, f), "old\n")
	}
	writeText(t, filepath.Join(e.stateDir, "dns.tier"), "dnsmasq\n")
	writeText(t, filepath.Join(e.stateDir, "profile.allowed"), "203.0.113.50\n")
	if _, err := e.shield(1000, infoSlirp, false).PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range stale {
		if exists(filepath.Join(e.stateDir, f)) {
			t.Errorf("%s still present", f)
		}
	}
	if got := readState(t, e.stateDir, "profile.allowed"); got != "198.51.100.0/24\n2001:db8::1\n" {
		t.Errorf("profile.allowed kept host-resolved addresses: %q", got)
	}
	if !exists(filepath.Join(e.stateDir, "dnsmasq.pid")) {
		t.Error("dnsmasq.pid removed: a leaked dnsmasq could no longer be found")
	}
	if got := readState(t, e.stateDir, "dns.tier"); got != "resolver\n" {
		t.Errorf("dns.tier = %q", got)
	}
}

func TestPreStartLiveStatePersists(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoSlirp, true)
	if _, err := s.PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	writeText(t, filepath.Join(dir, "live.allowed"), "203.0.113.77\n")
	writeText(t, filepath.Join(dir, "deny.list"), "203.0.113.50\n")
	if _, err := s.PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	rs := readState(t, dir, "ruleset.nft")
	if !strings.Contains(rs, "203.0.113.77") || !strings.Contains(rs, "add element inet terok_shield deny_v4 { 203.0.113.50 }") {
		t.Fatalf("live state not in ruleset:\n%s", rs)
	}
	if strings.Contains(rs, "203.0.113.50 }") && !strings.Contains(rs, "deny_v4 { 203.0.113.50 }") {
		t.Fatalf("denied address still allowed:\n%s", rs)
	}
}

func TestPreStartFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("setup needed", func(t *testing.T) {
		e := newPrestartEnv(t, false)
		_, err := e.shield(1000, infoSlirp, true).PreStart(ctx, "c1", nil)
		if !IsSetupNeeded(err) {
			t.Fatalf("err = %v", err)
		}
		if !strings.HasPrefix(err.Error(), "Podman 4.3.1 detected.\n\n") || !strings.Contains(err.Error(), "terok-sandbox shield setup --user") {
			t.Fatalf("message: %q", err.Error())
		}
	})
	tests := []struct {
		name     string
		profiles []string
		edit     func(e *prestartEnv)
		wantErr  string
	}{
		{"unknown profile", []string{"test", "nope"}, nil, "Profile not found: 'nope'"},
		{"unsafe profile", []string{"../x"}, nil, "Unsafe name: '../x'"},
		{"invalid entry", []string{"bad"}, func(e *prestartEnv) {
			writeText(t, filepath.Join(e.profiles, "bad.txt"), "1.2.3.4; flush ruleset\n")
		}, "line 1"},
		{"no hook binary", nil, func(e *prestartEnv) { e.hook = "" }, "terok-shield-hook not found"},
		{"state dir not creatable", nil, func(e *prestartEnv) {
			f := filepath.Join(t.TempDir(), "file")
			writeText(t, f, "x")
			e.stateDir = filepath.Join(f, "shield")
		}, "create shield state directory"},
		{"comma in state dir", nil, func(e *prestartEnv) { e.stateDir = filepath.Join(t.TempDir(), "a,b", "shield") }, "comma"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrestartEnv(t, true)
			if tt.edit != nil {
				tt.edit(&e)
			}
			_, err := e.shield(1000, infoSlirp, true).PreStart(ctx, "c1", tt.profiles)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("bad container name", func(t *testing.T) {
		e := newPrestartEnv(t, true)
		if _, err := e.shield(1000, infoSlirp, true).PreStart(ctx, "a,b", nil); err == nil {
			t.Fatal("accepted")
		}
	})
}

func TestPreStartSymlinkedStateDir(t *testing.T) {
	e := newPrestartEnv(t, true)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	e.stateDir = filepath.Join(link, "shield")
	args, err := e.shield(1000, infoSlirp, false).PreStart(context.Background(), "c1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resolved, _ := filepath.EvalSymlinks(real)
	if !containsArg(args, "terok.shield.state_dir="+filepath.Join(resolved, "shield")) {
		t.Fatalf("state_dir not resolved: %q", args)
	}
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

func TestAuditDisabledWritesNothing(t *testing.T) {
	e := newPrestartEnv(t, true)
	if _, err := e.shield(1000, infoSlirp, false).PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, shieldbundle.FileAudit)); err == nil {
		t.Fatal("audit.jsonl written with auditing disabled")
	}
}

func TestAuditTimestampFormat(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoSlirp, true)
	s.opts.Now = func() time.Time { return time.Date(2026, 3, 1, 13, 0, 0, 0, time.FixedZone("X", 3600)) }
	if _, err := s.PreStart(context.Background(), "proj-task-42", nil); err != nil {
		t.Fatal(err)
	}
	got := readState(t, e.stateDir, "audit.jsonl")
	want := `{"ts":"2026-03-01T12:00:00+00:00","container":"proj-task-42","action":"setup","detail":"profiles=test"}` + "\n"
	if !strings.HasSuffix(got, want) {
		t.Fatalf("audit:\n%s\nwant suffix\n%s", got, want)
	}
}

func TestPodmanFactsCache(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		euid int
		want string // the podman subcommand that must run
	}{{"root asks podman version only", 0, "version"}, {"rootless asks podman info", 1000, "info"}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newPrestartEnv(t, true)
			calls := filepath.Join(t.TempDir(), "calls")
			fakeBin(t, e.tools.Path, "podman", `echo "$1" >> `+calls+`
case "$1" in
version) echo '{"Client":{"Version":"4.3.1"}}' ;;
info) echo '{"version":{"Version":"4.3.1"},"host":{"rootlessNetworkCmd":"slirp4netns"}}' ;;
esac
`)
			cache := t.TempDir()
			newShield := func() *Shield {
				log, _ := testLog()
				return New(Config{StateDir: e.stateDir, DefaultProfiles: []string{"test"}, LoopbackPorts: []int{9418}, ProfilesDir: e.profiles},
					Options{Tools: e.tools, Paths: e.paths, HookBinary: e.hook, EUID: tt.euid, Log: log, Facts: testFacts(cache, e.paths, tt.euid)})
			}
			for i := 0; i < 3; i++ {
				args, err := newShield().PreStart(ctx, "c1", nil)
				if err != nil {
					t.Fatal(err)
				}
				if !containsArg(args, "slirp4netns:allow_host_loopback=true") {
					t.Fatalf("args %q", args)
				}
			}
			got := readState(t, filepath.Dir(calls), "calls")
			if got != tt.want+"\n" {
				t.Fatalf("podman calls %q, want one %s", got, tt.want)
			}
			// Another containers.conf invalidates the cache.
			writeText(t, e.paths.UserContainersConf, readState(t, filepath.Dir(e.paths.UserContainersConf), "containers.conf")+"# changed\n")
			if _, err := newShield().PreStart(ctx, "c1", nil); err != nil {
				t.Fatal(err)
			}
			if got := readState(t, filepath.Dir(calls), "calls"); got != tt.want+"\n"+tt.want+"\n" {
				t.Fatalf("cache not invalidated: %q", got)
			}
		})
	}
}

// TestHostAddressesDenied: every non-special address of the host is in the
// deny sets of the enforcing rulesets (pre-start, refresh, up), so a DNS
// answer naming one opens nothing; special ones are left to the special
// rejects, and only an exact explicit allow opens one.
func TestHostAddressesDenied(t *testing.T) {
	e := newPrestartEnv(t, true)
	s := e.shield(1000, infoSlirp, false)
	host := []string{"127.0.0.1", "::1", "fe80::1%eth0", "10.1.2.3", "198.51.100.77", "203.0.113.250", "2001:db8:ffff::1", "::ffff:203.0.113.251", "198.51.100.77"}
	s.opts.HostAddrs = func() []string { return host }
	if _, err := s.PreStart(context.Background(), "c1", nil); err != nil {
		t.Fatal(err)
	}
	dir, _ := filepath.EvalSymlinks(e.stateDir)
	rs := readState(t, dir, "ruleset.nft")
	// 198.51.100.77 lies inside the allowed 198.51.100.0/24: still denied
	// (the deny sets come first).
	for _, w := range []string{"add element inet terok_shield deny_v4 { 198.51.100.77, 203.0.113.250, 203.0.113.251 }", "add element inet terok_shield deny_v6 { 2001:db8:ffff::1 }"} {
		if !strings.Contains(rs, w) {
			t.Fatalf("ruleset.nft lacks %q:\n%s", w, rs)
		}
	}
	// The exact element lines above also show the special host addresses
	// (127.0.0.1, ::1, fe80::1, 10.1.2.3) are not there.
	if exists(filepath.Join(dir, "deny.list")) {
		t.Errorf("host addresses persisted in deny.list: %q", readState(t, dir, "deny.list"))
	}
	// An exact explicit allow opens one deliberately; the others stay.
	writeText(t, filepath.Join(dir, "live.allowed"), "203.0.113.250\n")
	if err := s.refreshBundleRuleset(dir); err != nil {
		t.Fatal(err)
	}
	if rs := readState(t, dir, "ruleset.nft"); !strings.Contains(rs, "deny_v4 { 198.51.100.77, 203.0.113.251 }") {
		t.Fatalf("refresh after an exact allow:\n%s", rs)
	}
	text, err := s.Preview(false, false)
	if err != nil || !strings.Contains(text, "deny_v4 { 198.51.100.77, 203.0.113.251 }") {
		t.Fatalf("up preview: %v\n%s", err, text)
	}
}

func TestHostDeny(t *testing.T) {
	got := hostDeny([]string{"192.168.1.5", "198.51.100.1", "bogus", "2001:db8::5", "198.51.100.1", "198.51.100.2"}, []string{"198.51.100.2", "198.51.100.0/24"})
	if strings.Join(got, ",") != "198.51.100.1,2001:db8::5" {
		t.Fatalf("hostDeny = %q", got)
	}
}
