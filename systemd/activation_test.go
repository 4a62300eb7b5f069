package systemd

import (
	"strings"
	"testing"
)

// The daemons pick their listeners by FileDescriptorName= (common/sdactivation)
// and report readiness: each socket names its descriptors as the daemon
// expects and each service waits for READY=1 (docs/install.md, Socket
// activation and readiness).
func TestActivationNamesAndNotify(t *testing.T) {
	for _, u := range []struct {
		socket, service, name string
	}{
		{GateSocket, GateService, "gate"},
		{ProxySocket, ProxyService, "credential-proxy"},
		{SSHAgentSocket, SSHAgentService, "ssh-agent"},
	} {
		if strings.Count(u.socket, "FileDescriptorName=") != 1 || !strings.Contains(u.socket, "\nFileDescriptorName="+u.name+"\n") {
			t.Errorf("%s socket: want FileDescriptorName=%s once", u.name, u.name)
		}
		if !strings.Contains(u.service, "\nType=notify\n") || strings.Contains(u.service, "Type=simple") {
			t.Errorf("%s service: want Type=notify", u.name)
		}
	}
}
