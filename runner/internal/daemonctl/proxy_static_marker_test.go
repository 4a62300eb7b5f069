package daemonctl

import (
	"slices"
	"strings"
	"testing"
)

// TestStaticMarkerSwitchReachesTheDaemon: proxy_static_marker becomes
// --allow-static-marker for the PID-file daemon and the systemd unit, and
// nothing when off (docs/credential-proxy.md, "The static marker").
func TestStaticMarkerSwitchReachesTheDaemon(t *testing.T) {
	for _, on := range []bool{false, true} {
		m, _ := newProxyManager(t)
		m.Cfg.ProxyStaticMarker = on
		if got := slices.Contains(m.DaemonArgs(), "--allow-static-marker"); got != on {
			t.Errorf("switch %v: daemon args %q", on, m.DaemonArgs())
		}
		units, err := m.RenderUnits("/usr/bin/terok-credential-proxy", m.Cfg.ProxyPort)
		if err != nil {
			t.Fatal(err)
		}
		want := "--allow-static-marker=false "
		if on {
			want = "--allow-static-marker=true "
		}
		for _, u := range units {
			if u.Name == m.Daemon.ServiceUnit && !strings.Contains(u.Content, want) {
				t.Errorf("switch %v: service unit lacks %q:\n%s", on, want, u.Content)
			}
		}
	}
}
