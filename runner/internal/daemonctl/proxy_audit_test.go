package daemonctl

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestAuditFileReachesTheDaemon: the config's audit key becomes the
// proxy's --audit-file (its audit file, or off) for the PID-file daemon and
// the systemd unit, whose hardening lets it write the audit directory
// (docs/audit.md, Files).
func TestAuditFileReachesTheDaemon(t *testing.T) {
	for _, on := range []bool{true, false} {
		m, _ := newProxyManager(t)
		m.Cfg.Audit = on
		want := "--audit-file=off"
		if on {
			want = "--audit-file=" + m.Cfg.AuditFile("proxy")
		}
		if !slices.Contains(m.DaemonArgs(), want) {
			t.Errorf("audit %v: daemon args %q lack %q", on, m.DaemonArgs(), want)
		}
		units, err := m.RenderUnits("/usr/bin/terok-credential-proxy", m.Cfg.ProxyPort)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range units {
			if u.Name != m.Daemon.ServiceUnit {
				continue
			}
			if !strings.Contains(u.Content, " "+want+"\n") {
				t.Errorf("audit %v: service unit lacks %q:\n%s", on, want, u.Content)
			}
			if !strings.Contains(u.Content, "ReadWritePaths="+m.Cfg.CredentialsDir+" -"+m.Cfg.AuditDir()+"\n") ||
				!strings.Contains(u.Content, "ExecStartPre=+/usr/bin/mkdir -p -m 0700 "+m.Cfg.AuditDir()+"\n") {
				t.Errorf("audit %v: the service cannot write %s:\n%s", on, m.Cfg.AuditDir(), u.Content)
			}
		}
	}
	m, _ := newProxyManager(t)
	if err := m.PrepareFiles(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(m.Cfg.AuditDir()); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("audit directory after PrepareFiles: %v %v", st, err)
	}
}
