package daemonctl

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/systemd"
)

func TestDaemonDescriptions(t *testing.T) {
	tests := []struct {
		name      string
		d         Daemon
		binary    string
		units     []string
		installed int
		outdated  bool
	}{
		{"gate current", Gate(), "terok-gate", []string{systemd.GateSocketName, systemd.GateServiceName, systemd.LegacyGateServiceName}, systemd.GateUnitVersion, false},
		{"gate older", Gate(), "terok-gate", nil, systemd.GateUnitVersion - 1, true},
		{"gate unversioned", Gate(), "terok-gate", nil, StampUnversioned, true},
		{"gate missing", Gate(), "terok-gate", nil, StampMissing, false},
		{"proxy current", Proxy(), "terok-credential-proxy", []string{systemd.ProxySocketName, systemd.ProxyServiceName}, systemd.ProxyUnitVersion, false},
		{"proxy older", Proxy(), "terok-credential-proxy", nil, 6, true},
		{"proxy newer", Proxy(), "terok-credential-proxy", nil, systemd.ProxyUnitVersion + 1, false},
		{"agent current", Agent(), "terok-ssh-agent", []string{systemd.SSHAgentSocketName, systemd.SSHAgentServiceName}, systemd.SSHAgentUnitVersion, false},
		{"agent older", Agent(), "terok-ssh-agent", nil, systemd.SSHAgentUnitVersion - 1, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.d.Binary != tc.binary {
				t.Errorf("Binary = %q, want %q", tc.d.Binary, tc.binary)
			}
			if tc.units != nil && !slices.Equal(tc.d.UnitNames(), tc.units) {
				t.Errorf("UnitNames = %q, want %q", tc.d.UnitNames(), tc.units)
			}
			if got := tc.d.Outdated(tc.installed); got != tc.outdated {
				t.Errorf("Outdated(%d) = %v, want %v", tc.installed, got, tc.outdated)
			}
		})
	}
}

// An Instance finds its socket unit in the user unit directory of its
// environment, reads its stamp and words the outdated warning.
func TestInstanceUnits(t *testing.T) {
	home := t.TempDir()
	vars := testkit.RootVars(home)
	unitDir := filepath.Join(home, ".config", "systemd", "user")
	d := Gate()
	tests := []struct {
		name      string
		euid      int
		unit      string // socket unit content; "" = none
		installed bool
		version   int
		warning   string
	}{
		{"no unit", 1000, "", false, StampMissing, ""},
		{"current", 1000, d.StampPrefix + " " + strconv.Itoa(d.UnitVersion) + "\n", true, d.UnitVersion, ""},
		{"older", 1000, d.StampPrefix + " 6\n", true, 6, "Systemd units are outdated (installed v6, expected v" + strconv.Itoa(d.UnitVersion) + ")."},
		{"unversioned", 1000, "[Socket]\n", true, StampUnversioned, "Systemd units are outdated (installed unversioned, expected v" + strconv.Itoa(d.UnitVersion) + ")."},
		{"root has no user units", 0, d.StampPrefix + " 6\n", false, StampMissing, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.RemoveAll(unitDir)
			if tc.unit != "" {
				if err := os.MkdirAll(unitDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(unitDir, d.SocketUnit), []byte(tc.unit), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			i := Instance{Daemon: d, Env: testkit.Env(vars, tc.euid, home), PIDFile: filepath.Join(home, "run", "gate-server.pid")}
			if got := i.SocketInstalled(); got != tc.installed {
				t.Errorf("SocketInstalled = %v, want %v", got, tc.installed)
			}
			if got := i.InstalledVersion(); got != tc.version {
				t.Errorf("InstalledVersion = %d, want %d", got, tc.version)
			}
			if got := i.OutdatedWarning(); got != tc.warning {
				t.Errorf("OutdatedWarning = %q, want %q", got, tc.warning)
			}
			if _, ok := i.DaemonPID(); ok {
				t.Error("DaemonPID found a daemon without a PID file")
			}
		})
	}
}

func TestInstanceFind(t *testing.T) {
	var asked string
	i := Instance{Daemon: Proxy(), FindBinary: func(name string) (string, error) { asked = name; return "/x/" + name, nil }}
	if p, err := i.Find(); err != nil || p != "/x/terok-credential-proxy" || asked != "terok-credential-proxy" {
		t.Fatalf("Find = %q, %v (asked %q)", p, err, asked)
	}
}

// A PID file that names a process of another program is never trusted.
func TestInstanceStopRefusesForeignPID(t *testing.T) {
	dir := t.TempDir()
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pidFile := filepath.Join(dir, "gate-server.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(sleeper.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	i := Instance{Daemon: Gate(), Env: config.Env{EUID: 1000, Home: dir}, PIDFile: pidFile}
	if _, ok := i.DaemonPID(); ok {
		t.Fatal("a sleep process passed as the gate")
	}
	if i.StopDaemon() {
		t.Fatal("StopDaemon signalled a foreign process")
	}
	if !Alive(sleeper.Process.Pid) {
		t.Fatal("the foreign process is gone")
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("PID file left: %v", err)
	}
}

func TestHealthyAndWaitPort(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/health" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer ok.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) }))
	defer sick.Close()
	port := func(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }
	closed := testkit.FreePort(t)
	ctx := context.Background()
	tests := []struct {
		name string
		port int
		want bool
	}{
		{"200", port(ok), true},
		{"503", port(sick), false},
		{"nothing listens", closed, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Healthy(ctx, tc.port, 2*time.Second); got != tc.want {
				t.Errorf("Healthy = %v, want %v", got, tc.want)
			}
		})
	}
	if !WaitPort(ctx, port(ok)) {
		t.Error("WaitPort missed a listening port")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if WaitPort(cctx, closed) {
		t.Error("WaitPort found a closed port")
	}
}

func TestMessage(t *testing.T) {
	err := Messagef("Gate server is not running.\n%s", "terok-sandbox gate start")
	var m Message
	if !errors.As(err, &m) || err.Error() != "Gate server is not running.\nterok-sandbox gate start" {
		t.Fatalf("Messagef = %#v", err)
	}
}

// Every daemon's data renders both its units with no placeholder left, its
// binary and port in them, and refuses a port out of range.
func TestEveryDaemonRenders(t *testing.T) {
	cfg := config.Defaults(config.Env{EUID: 1000, Home: t.TempDir()})
	for _, d := range []Daemon{Gate(), Proxy(), Agent()} {
		units, err := d.RenderUnits(cfg, "/opt/bin/"+d.Binary, d.Port(cfg))
		if err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
		if len(units) != 2 || units[0].Name != d.SocketUnit || units[1].Name != d.ServiceUnit {
			t.Fatalf("%s: units %v", d.Name, units)
		}
		if !strings.Contains(units[0].Content, "127.0.0.1:"+strconv.Itoa(d.Port(cfg))) || !strings.Contains(units[1].Content, "/opt/bin/"+d.Binary) {
			t.Errorf("%s: port or binary missing:\n%s\n%s", d.Name, units[0].Content, units[1].Content)
		}
		if !strings.HasPrefix(units[0].Content, d.StampPrefix+" "+strconv.Itoa(d.UnitVersion)+"\n") {
			t.Errorf("%s: socket unit stamp:\n%s", d.Name, units[0].Content)
		}
		if _, err := d.RenderUnits(cfg, "/opt/bin/"+d.Binary, 0); err == nil || !strings.Contains(err.Error(), d.Name+" port 0") {
			t.Errorf("%s: port 0: %v", d.Name, err)
		}
	}
}
