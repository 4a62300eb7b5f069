package systemd

import (
	"strings"
	"testing"
)

func TestProxyTemplates(t *testing.T) {
	for name, tmpl := range map[string]string{ProxySocketName: ProxySocket, ProxyServiceName: ProxyService} {
		if !strings.HasPrefix(tmpl, ProxyStampPrefix+" {{UNIT_VERSION}}\n") {
			t.Errorf("%s: first line is not the version stamp", name)
		}
	}
	// Descriptor 3 must be the Unix socket and 4 the TCP one (docs/credential-proxy.md, Design).
	var listens []string
	for _, l := range strings.Split(ProxySocket, "\n") {
		if strings.HasPrefix(l, "ListenStream=") {
			listens = append(listens, l)
		}
	}
	if len(listens) != 2 || listens[0] != "ListenStream={{SOCKET_PATH}}" || listens[1] != "ListenStream=127.0.0.1:{{PORT}}" {
		t.Errorf("ListenStream lines = %q", listens)
	}
	for _, ph := range []string{"{{BIN}}", "{{SOCKET_PATH}}", "{{DB_PATH}}", "{{ROUTES_PATH}}", "{{PORT}}", "{{SSH_AGENT_PORT}}", "{{SSH_KEYS_FILE}}", "{{CREDENTIALS_DIR}}",
		"--audit-file={{AUDIT_FILE}}", "{{AUDIT_DIR}}"} {
		if !strings.Contains(ProxyService, ph) {
			t.Errorf("service lacks %s", ph)
		}
	}
	if !strings.Contains(ProxySocket, "SocketMode=0600") {
		t.Error("socket mode")
	}
}
