package daemonctl

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
)

// fakeSystemd records calls; it stands in for systemctl, which cannot run
// here (systemd is not PID 1). Unit files are really written and removed.
type fakeSystemd struct {
	mu        sync.Mutex
	available bool
	// allActive makes every unit active; active names single ones.
	allActive   bool
	active      map[string]bool
	calls       []string
	installed   []Unit
	uninstalled bool
}

func (f *fakeSystemd) Available(context.Context) bool { return f.available }
func (f *fakeSystemd) IsActive(_ context.Context, u string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.allActive || f.active[u]
}
func (f *fakeSystemd) Call(_ context.Context, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, strings.Join(args, " "))
	return nil
}
func (f *fakeSystemd) Install(ctx context.Context, dir string, units []Unit, socket string) error {
	f.installed = units
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(dir, u.Name), []byte(u.Content), 0o644); err != nil {
			return err
		}
	}
	return f.Call(ctx, "install", socket)
}
func (f *fakeSystemd) Uninstall(ctx context.Context, dir string, names []string, socket string) error {
	f.uninstalled = true
	for _, n := range names {
		os.Remove(filepath.Join(dir, n))
	}
	return f.Call(ctx, "uninstall", socket)
}

// testBins builds the real daemons on first use, once per test binary
// (TEROK_BIN_DIR wins), into one directory TestMain removes.
var testBins struct {
	mu   sync.Mutex
	dir  string
	done map[string]string
}

var daemonPackages = map[string]string{
	GateBinary:  "terok.dev/sandbox/gate/cmd/terok-gate",
	ProxyBinary: "terok.dev/sandbox/credproxy/cmd/terok-credential-proxy",
	AgentBinary: "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent",
}

// testBin is the path of the built daemon name.
func testBin(t *testing.T, name string) string {
	t.Helper()
	p, err := buildBin(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// findTestBin is a FindBinary building what it is asked for; the proxy
// finds its agent next to itself.
func findTestBin(name string) (string, error) {
	if name == ProxyBinary {
		if _, err := buildBin(AgentBinary); err != nil {
			return "", err
		}
	}
	return buildBin(name)
}

func buildBin(name string) (string, error) {
	testBins.mu.Lock()
	defer testBins.mu.Unlock()
	if p, ok := testBins.done[name]; ok {
		return p, nil
	}
	pkg, ok := daemonPackages[name]
	if !ok {
		return "", fmt.Errorf("no package for %s", name)
	}
	if testBins.dir == "" {
		d, err := os.MkdirTemp("", "daemonctl-bin-")
		if err != nil {
			return "", err
		}
		testBins.dir, testBins.done = d, map[string]string{}
	}
	out := filepath.Join(testBins.dir, name)
	if pre := os.Getenv("TEROK_BIN_DIR"); pre != "" {
		if b, err := os.ReadFile(filepath.Join(pre, name)); err == nil {
			if err := os.WriteFile(out, b, 0o755); err != nil {
				return "", err
			}
			testBins.done[name] = out
			return out, nil
		}
	}
	if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, b)
	}
	testBins.done[name] = out
	return out, nil
}

// TestMain: these tests resolve the sandbox's roots; testkit.Run gives
// them fresh ones and fails the run if anything was written under a default
// root (docs/testing.md, Shared test helpers). The built daemons go after.
func TestMain(m *testing.M) {
	code := testkit.Run(m)
	if testBins.dir != "" {
		os.RemoveAll(testBins.dir)
	}
	os.Exit(code)
}

// testManager is d's manager for a non-root user with a home, state,
// runtime, config and credentials directories of its own, fs as systemctl
// and the built daemons.
func testManager(t *testing.T, fs *fakeSystemd, d Daemon) Manager {
	t.Helper()
	base := t.TempDir()
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"TEROK_SANDBOX_STATE_DIR":   filepath.Join(base, "state"),
		"TEROK_SANDBOX_RUNTIME_DIR": filepath.Join(base, "run"),
		"TEROK_SANDBOX_CONFIG_DIR":  filepath.Join(base, "config"),
		"TEROK_CREDENTIALS_DIR":     filepath.Join(base, "cred"),
		"TEROK_CONFIG_DIR":          filepath.Join(base, "umbrella"),
		"PATH":                      os.Getenv("PATH"),
	}
	env := config.Env{EUID: 1000, Home: home, Getenv: func(k string) string { return vars[k] }}
	return Manager{Base: Base{Cfg: config.Defaults(env), Env: env, Systemd: fs, FindBinary: findTestBin, Log: discard()}, Daemon: d}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
