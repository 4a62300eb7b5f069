package testharness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SetupShield prepares the runner for shielded launches the way a host is
// set up: `shield setup` installs the global hooks into a
// hooks directory of the runner's own, which a test containers.conf (the
// harness settings plus hooks_dir) names through CONTAINERS_CONF in
// ExtraEnv; `shield check` must then report ok. Root runs `setup --root`;
// the rootless user runs `setup --user` with a home of the runner's, so
// the real user's containers.conf is left alone.
func (r *Runner) SetupShield(ctx context.Context) (hooksDir string, err error) {
	if r.User == nil {
		hooksDir = filepath.Join(r.Base, "hooks")
	} else {
		hooksDir = filepath.Join(r.Base, "home", ".local", "share", "containers", "oci", "hooks.d")
	}
	base, err := os.ReadFile(r.env.ContainersConf)
	if err != nil {
		return "", err
	}
	conf := strings.Replace(string(base), "\n[engine]\n", "\n[engine]\nhooks_dir = [\""+hooksDir+"\"]\n", 1)
	if !strings.Contains(conf, hooksDir) {
		return "", fmt.Errorf("test containers.conf has no [engine] section:\n%s", base)
	}
	confPath := filepath.Join(r.Base, "containers-shield.conf")
	if err := r.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", err
	}
	r.ExtraEnv = append(r.ExtraEnv, "CONTAINERS_CONF="+confPath)

	var res Result
	if r.User == nil {
		res = r.Sandbox(ctx, "shield", "setup", "--root")
	} else {
		// --user writes below $HOME: a home of the runner's. (podman keeps
		// the real HOME for its storage; CONTAINERS_CONF names the hooks
		// dir for it.)
		home := filepath.Join(r.Base, "home")
		if err := r.Mkdir(home, 0o755); err != nil {
			return "", err
		}
		bin, err := r.env.Bin("terok-sandbox")
		if err != nil {
			return "", err
		}
		cmd := r.Command(ctx, bin, "shield", "setup", "--user")
		cmd.Env = append(cmd.Env, "HOME="+home)
		res = Collect(cmd)
		if res.Code == 0 {
			data, err := os.ReadFile(filepath.Join(home, ".config", "containers", "containers.conf"))
			if err != nil || !strings.Contains(string(data), "hooks_dir = [") || !strings.Contains(string(data), hooksDir) {
				return "", fmt.Errorf("--user did not write the user containers.conf: %q %v", data, err)
			}
		}
	}
	if res.Code != 0 || !strings.Contains(res.Stdout, "Shield hooks installed in "+hooksDir) {
		return "", fmt.Errorf("shield setup: %s", res)
	}
	if res = r.Sandbox(ctx, "shield", "check"); res.Code != 0 || !strings.Contains(res.Stdout, "Health:         ok") {
		return "", fmt.Errorf("shield check: %s", res)
	}
	return hooksDir, nil
}
