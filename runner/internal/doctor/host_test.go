package doctor

import (
	"context"
	"os"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/seccomp"
)

func TestHostChecks(t *testing.T) {
	good, err := seccomp.Transform([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	podmanLike := []byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["socket"],"action":"SCMP_ACT_ALLOW"}]}`)
	cases := []struct {
		name    string
		profile []byte
		mode    os.FileMode
		marker  bool
		want    map[string]Severity
		detail  string
	}{
		{"healthy", good, 0o644, false, map[string]Severity{"Seccomp profile": OK, "Static phantom marker": OK}, "refuses AF_VSOCK"},
		{"missing", nil, 0, false, map[string]Severity{"Seccomp profile": Error, "Static phantom marker": OK}, "shield setup"},
		{"vsock open", podmanLike, 0o644, false, map[string]Severity{"Seccomp profile": Error}, "socket(AF_VSOCK) is allowed"},
		{"writable by others", good, 0o646, false, map[string]Severity{"Seccomp profile": Error}, "writable by group or others"},
		{"marker on", good, 0o644, true, map[string]Severity{"Seccomp profile": OK, "Static phantom marker": Warn}, "refuses AF_VSOCK"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Config{ConfigDir: t.TempDir(), ProxyStaticMarker: c.marker}
			if c.profile != nil {
				p := seccomp.Path(cfg.ConfigDir)
				if err := os.WriteFile(p, c.profile, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, c.mode); err != nil {
					t.Fatal(err)
				}
			}
			results := RunStandalone(context.Background(), HostChecks(cfg, os.Geteuid()), ProbeTimeout)
			got := map[string]Result{}
			for _, r := range results {
				got[r.Label] = r
			}
			for label, sev := range c.want {
				if got[label].Severity != sev {
					t.Errorf("%s: %s (%s), want %s", label, got[label].Severity, got[label].Detail, sev)
				}
			}
			if d := got["Seccomp profile"].Detail; !strings.Contains(d, c.detail) {
				t.Errorf("seccomp detail %q lacks %q", d, c.detail)
			}
			if c.marker && !strings.Contains(got["Static phantom marker"].Detail, "proxy_static_marker = false") {
				t.Errorf("marker warning names no fix: %q", got["Static phantom marker"].Detail)
			}
			if c.want["Seccomp profile"] == Error && ExitCode(results) != 2 {
				t.Errorf("exit code %d", ExitCode(results))
			}
		})
	}
}
