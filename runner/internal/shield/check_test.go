package shield

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/shieldbundle"

	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

func TestCheckEnvironment(t *testing.T) {
	ctx := context.Background()
	v := strconv.Itoa(shieldbundle.BundleVersion)
	tests := []struct {
		name       string
		hook       string // script body of the installed hook; "" → not installed
		where      string // "user" or "root"
		tools      []string
		info       podmaninfo.Info
		wantHooks  string
		wantHealth string
		wantIssues []string
		wantOK     bool
	}{
		{"not installed", "", "", []string{"nft", "nsenter"}, infoSlirp, HooksNotInstalled, HealthSetupNeeded,
			[]string{"Global hooks not installed - containers will lose firewall on restart"}, false},
		{"user hooks ok", "[ \"$1\" = --bundle-version ] && echo " + v + "\n", "user", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, nil, true},
		{"system hooks ok", "[ \"$1\" = --bundle-version ] && echo " + v + "\n", "root", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalSystem, HealthOK, nil, true},
		// dnsmasq and dig are no longer needed: their absence is no issue.
		{"no dnsmasq, no dig", "echo " + v + "\n", "user", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, nil, true},
		{"stale version", "echo 4\n", "user", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthStaleHooks,
			[]string{"Installed hook version 4 != expected " + v + ". Run 'terok-sandbox shield setup' to update."}, false},
		{"unreadable version", "exit 1\n", "user", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthStaleHooks,
			[]string{"Installed hook version unknown"}, false},
		{"legacy script hook", "exit 1\n_BUNDLE_VERSION = " + v + "\n", "user", []string{"nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, nil, true},
		{"no nft", "echo " + v + "\n", "user", []string{"nsenter"}, infoSlirp, HooksGlobalUser, HealthOK,
			[]string{"nft not found"}, false},
		{"podman failed", "echo " + v + "\n", "user", []string{"nft", "nsenter"}, podmaninfo.Info{}, HooksGlobalUser, HealthOK,
			[]string{"podman info failed"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPaths(t)
			mkdir(t, p.SystemHooksDirs[0])
			bin := t.TempDir()
			for _, tool := range tt.tools {
				fakeBin(t, bin, tool, "exit 0\n")
			}
			tools := Tools{Path: bin}
			if tt.hook != "" {
				src := t.TempDir()
				fakeBin(t, src, "terok-shield-hook", tt.hook)
				o := SetupOptions{HookBinary: filepath.Join(src, "terok-shield-hook"), Paths: p}
				if tt.where == "user" {
					o.User = true
				} else {
					o.Root = true
				}
				if _, err := Setup(ctx, o); err != nil {
					t.Fatal(err)
				}
			}
			// nft/nsenter fallbacks are absolute host paths; skip the
			// "missing" expectation when the host has them.
			r := CheckEnvironment(ctx, tools, tt.info, p)
			if r.Hooks != tt.wantHooks || r.Health != tt.wantHealth || r.DNSTier != TierResolver {
				t.Fatalf("got hooks=%s health=%s tier=%s issues=%q", r.Hooks, r.Health, r.DNSTier, r.Issues)
			}
			for _, w := range tt.wantIssues {
				if w == "nft not found" && isExecutable("/usr/sbin/nft") {
					continue
				}
				found := false
				for _, is := range r.Issues {
					found = found || strings.Contains(is, w)
				}
				if !found {
					t.Errorf("issue %q missing from %q", w, r.Issues)
				}
			}
			if tt.wantOK && !r.OK {
				t.Errorf("not ok: %q", r.Issues)
			}
			if r.OK != (len(r.Issues) == 0) {
				t.Errorf("ok=%v with issues %q", r.OK, r.Issues)
			}
			if (r.Health == HealthSetupNeeded) != r.NeedsSetup || (r.NeedsSetup && r.SetupHint != SetupHint) {
				t.Errorf("needs_setup=%v hint=%q", r.NeedsSetup, r.SetupHint)
			}
		})
	}
}

func TestAdapterBypass(t *testing.T) {
	a := &Adapter{}
	a.Cfg.ShieldBypass = true
	a.Cfg.ShieldProfiles = []string{"dev-standard"}
	args, err := a.PreStart(context.Background(), firewall.Launch{Container: "c", TaskDir: t.TempDir()})
	if err != nil || args != nil {
		t.Fatalf("bypass pre-start: %q %v", args, err)
	}
	c := a.Check(context.Background())
	if c.OK || c.Health != HealthBypass || c.Hooks != HooksPerContainer || c.PodmanVersion != "0.0.0" || len(c.Issues) != 1 || c.NeedsSetup {
		t.Fatalf("check: %+v", c)
	}
	st := a.Status()
	if !st.Bypass || st.Mode != "hook" {
		t.Fatalf("status: %+v", st)
	}
	if err := a.Down(context.Background(), "c", "/nonexistent", false); err != nil {
		t.Fatal(err)
	}
	if err := a.Up(context.Background(), "c", "/nonexistent"); err != nil {
		t.Fatal(err)
	}
}

// TestAdapterCheck: the check reports a missing hook binary and stops the
// resolver a failed start leaked (and says so), under bypass too.
func TestAdapterCheck(t *testing.T) {
	ctx := context.Background()
	for _, bypass := range []bool{false, true} {
		state := t.TempDir()
		dir := taskShieldDir(t, state, "proj-task-7")
		r := startFakeResolver(t, dir, false)
		a := cleanupAdapter(t, state, "exit 125", "echo '[]'")
		a.Cfg.ShieldBypass = bypass
		p, _ := testPaths(t)
		a.Opts.Paths = p
		a.Opts.Info = &infoSlirp
		a.Opts.Now = func() time.Time { return time.Now().Add(time.Minute) }
		c := a.Check(ctx)
		want := "stopped leaked resolver for task proj-task-7 (pid " + strconv.Itoa(r.pid()) + ")"
		if len(c.Cleaned) != 1 || c.Cleaned[0] != want || !r.exited(2*time.Second) {
			t.Fatalf("bypass=%v: cleaned %q, want %q", bypass, c.Cleaned, want)
		}
		hookIssue := false
		for _, is := range c.Issues {
			hookIssue = hookIssue || strings.Contains(is, "terok-shield-hook not found")
		}
		if hookIssue == bypass || c.OK {
			t.Fatalf("bypass=%v: issues %q", bypass, c.Issues)
		}
		// The environment alone (shield status) stops nothing.
		r2 := startFakeResolver(t, dir, false)
		if e := a.Environment(ctx); len(e.Cleaned) != 0 || r2.exited(200*time.Millisecond) {
			t.Fatalf("bypass=%v: Environment stopped a helper: %q", bypass, e.Cleaned)
		}
	}
}
