package doctor

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

func TestSandboxChecksRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   InContainer
		want string
	}{
		{"unknown shield state", InContainer{DesiredShield: "sideways"}, "sideways"},
		{"port too large", InContainer{ProxyPort: 70000}, "70000"},
		{"negative port", InContainer{SSHAgentPort: -1}, "-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := SandboxChecks(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// A proxy answering its health endpoint passes; an SSH agent port nobody
// listens on fails with the host fix the CLI prints.
func TestRunAgainstRealListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/health" {
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	deadPort := testkit.FreePort(t)

	checks, err := SandboxChecks(InContainer{ProxyPort: ln.Addr().(*net.TCPAddr).Port, SSHAgentPort: deadPort, DesiredShield: "up"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range checks {
		checks[i].HostFix = "fix " + checks[i].Label
	}
	res := Run(context.Background(), checks, 0)
	if len(res) != 3 {
		t.Fatalf("results %+v", res)
	}
	if res[0].Severity != OK || res[0].Fix != "" {
		t.Fatalf("proxy: %+v", res[0])
	}
	if res[1].Severity != Error || res[1].Fix != "fix SSH agent (TCP)" || !strings.Contains(res[1].Detail, strconv.Itoa(deadPort)) {
		t.Fatalf("agent: %+v", res[1])
	}
	// The shield check is host-side: Run feeds it an empty state.
	if res[2].Severity != Warn || !res[2].Fixable {
		t.Fatalf("shield: %+v", res[2])
	}
	if ExitCode(res) != 2 {
		t.Fatalf("exit code %d", ExitCode(res))
	}
}
