package shield

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// Hook installation kinds and health values (docs/shield.md, Status and check).
const (
	HooksPerContainer = "per-container"
	HooksGlobalSystem = "global-system"
	HooksGlobalUser   = "global-user"
	HooksNotInstalled = "not-installed"

	HealthOK          = "ok"
	HealthSetupNeeded = "setup-needed"
	HealthStaleHooks  = "stale-hooks"
	HealthBypass      = "bypass"
)

// EnvCheck is the environment check result (docs/shield.md, Status and check).
type EnvCheck struct {
	OK            bool     `json:"ok"`
	PodmanVersion string   `json:"podman_version"`
	Hooks         string   `json:"hooks"`
	HooksDir      string   `json:"hooks_dir,omitempty"`
	Health        string   `json:"health"`
	DNSTier       string   `json:"dns_tier"`
	Nft           string   `json:"nft,omitempty"`
	Issues        []string `json:"issues"`
	// Cleaned lists the leftovers of failed starts the check found and
	// stopped ("stopped leaked resolver for task X (pid N)").
	Cleaned    []string `json:"cleaned,omitempty"`
	NeedsSetup bool     `json:"needs_setup"`
	SetupHint  string   `json:"setup_hint"`
}

// SetupHint is the setup instruction (docs/shield.md, Global hooks and `shield setup`).
const SetupHint = "Per-container hook directories do not survive a container restart, so the shield's\n" +
	"global OCI hooks must be installed once:\n" +
	"  terok-sandbox shield setup --user    (rootless podman, this user)\n" +
	"  terok-sandbox shield setup --root    (rootful podman, system-wide)"

// hooksPersistFrom is the podman version from which a per-container
// --hooks-dir would survive a restart: never (docs/shield.md, Global hooks and `shield setup`).
var hooksPersistFrom = podmaninfo.Version{99, 0, 0}

// legacyVersionLine matches the version marker of an old script hook.
var legacyVersionLine = regexp.MustCompile(`^_BUNDLE_VERSION\s*=\s*(\d+)`)

// CheckEnvironment never fails; problems become issues.
func CheckEnvironment(ctx context.Context, tools Tools, info podmaninfo.Info, paths HostPaths) EnvCheck {
	r := EnvCheck{PodmanVersion: info.Version.String(), Issues: []string{}}
	// Every launch uses the resolver tier: the hook binary is the resolver,
	// and pre-start (and Adapter.Check) already require it.
	r.DNSTier = TierResolver
	if !info.OK {
		r.Issues = append(r.Issues, "podman info failed: is podman installed and working for this user?")
	}
	if r.Nft = tools.LookPath("nft", nftFallbacks...); r.Nft == "" {
		r.Issues = append(r.Issues, "nft not found: install nftables (e.g. apt-get install nftables)")
	}
	if tools.LookPath("nsenter", "/usr/bin/nsenter") == "" {
		r.Issues = append(r.Issues, "nsenter not found: install util-linux")
	}
	dir := paths.GlobalHookDir()
	persist := !info.Version.Less(hooksPersistFrom)
	switch {
	case dir != "" && persist:
		r.Hooks, r.HooksDir, r.Health = HooksPerContainer, dir, HealthStaleHooks
		r.Issues = append(r.Issues, fmt.Sprintf("podman %s keeps per-container hooks; the global hooks in %s are no longer needed and may be removed", r.PodmanVersion, dir))
	case persist:
		r.Hooks, r.Health = HooksPerContainer, HealthOK
	case dir != "":
		r.HooksDir = dir
		r.Hooks = HooksGlobalUser
		if filepath.Clean(dir) == filepath.Clean(paths.RootSetupDir()) {
			r.Hooks = HooksGlobalSystem
		}
		v, err := InstalledHookVersion(ctx, tools, dir)
		if err != nil || v != shieldbundle.BundleVersion {
			shown := strconv.Itoa(v)
			if err != nil {
				shown = "unknown (" + err.Error() + ")"
			}
			r.Health = HealthStaleHooks
			r.Issues = append(r.Issues, fmt.Sprintf("Installed hook version %s != expected %d. Run 'terok-sandbox shield setup' to update.", shown, shieldbundle.BundleVersion))
		} else {
			r.Health = HealthOK
		}
	default:
		r.Hooks, r.Health, r.NeedsSetup, r.SetupHint = HooksNotInstalled, HealthSetupNeeded, true, SetupHint
		r.Issues = append(r.Issues, "Global hooks not installed - containers will lose firewall on restart")
	}
	r.OK = len(r.Issues) == 0
	return r
}

// InstalledHookVersion asks the installed hook for its bundle version; for
// an old script hook it reads the _BUNDLE_VERSION line. The hook is the one
// the createRuntime descriptor names (an older setup copied it into dir).
func InstalledHookVersion(ctx context.Context, tools Tools, dir string) (int, error) {
	exe := filepath.Join(dir, shieldbundle.HookBinary)
	if data, err := os.ReadFile(filepath.Join(dir, shieldbundle.DescCreateRuntime)); err == nil {
		if p, err := shieldbundle.DescriptorHookPath(data); err == nil {
			exe = p
		}
	}
	if _, err := os.Stat(exe); err != nil {
		return 0, fmt.Errorf("hook executable missing: %w", err)
	}
	res, err := tools.Run(ctx, 10*time.Second, "", exe, "--bundle-version")
	if err == nil && res.Code == 0 {
		if v, err := strconv.Atoi(strings.TrimSpace(res.Stdout)); err == nil {
			return v, nil
		}
	}
	f, err := os.Open(exe)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := legacyVersionLine.FindStringSubmatch(sc.Text()); m != nil {
			return strconv.Atoi(m[1])
		}
	}
	return 0, fmt.Errorf("%s does not report a bundle version", exe)
}
