package shield

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/podmaninfo"
)

func TestCheckEnvironment(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		hook       string // script body of the installed hook; "" → not installed
		where      string // "user" or "root"
		tools      []string
		info       podmaninfo.Info
		wantHooks  string
		wantHealth string
		wantTier   string
		wantIssues []string
		wantOK     bool
	}{
		{"not installed", "", "", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksNotInstalled, HealthSetupNeeded, TierDnsmasq,
			[]string{"Global hooks not installed - containers will lose firewall on restart"}, false},
		{"user hooks ok", "[ \"$1\" = --bundle-version ] && echo 4\n", "user", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, TierDnsmasq, nil, true},
		{"system hooks ok", "[ \"$1\" = --bundle-version ] && echo 4\n", "root", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksGlobalSystem, HealthOK, TierDnsmasq, nil, true},
		{"stale version", "echo 3\n", "user", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthStaleHooks, TierDnsmasq,
			[]string{"Installed hook version 3 != expected 4. Run 'terok-sandbox shield setup' to update."}, false},
		{"unreadable version", "exit 1\n", "user", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthStaleHooks, TierDnsmasq,
			[]string{"Installed hook version unknown"}, false},
		{"legacy script hook", "exit 1\n_BUNDLE_VERSION = 4\n", "user", []string{"dnsmasq", "nft", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, TierDnsmasq, nil, true},
		{"dig tier, no nft", "echo 4\n", "user", []string{"dig", "nsenter"}, infoSlirp, HooksGlobalUser, HealthOK, TierDig,
			[]string{"dnsmasq (with nftset support) is missing", "nft not found"}, false},
		{"getent tier, podman failed", "echo 4\n", "user", []string{"nft", "nsenter"}, podmaninfo.Info{}, HooksGlobalUser, HealthOK, TierGetent,
			[]string{"neither dnsmasq nor dig", "podman info failed"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := testPaths(t)
			mkdir(t, p.SystemHooksDirs[0])
			bin := t.TempDir()
			for _, tool := range tt.tools {
				body := "exit 0\n"
				if tool == "dnsmasq" {
					body = "echo 'Dnsmasq version 2.90 Compile time options: nftset'\n"
				}
				fakeBin(t, bin, tool, body)
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
			if r.Hooks != tt.wantHooks || r.Health != tt.wantHealth || r.DNSTier != tt.wantTier {
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
	args, err := a.PreStart(context.Background(), "c", t.TempDir())
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
