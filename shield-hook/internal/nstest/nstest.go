// Package nstest makes scratch network namespaces for the kernel tests
// of the shield-hook packages (nflog, nfqueue, nftnl, resolver): each
// test runs against the real kernel in a namespace of its own and never
// touches the host's (docs/testing.md, Where tests live). Test code only.
package nstest

import (
	"os"
	"os/exec"
	"testing"

	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// NS is a scratch namespace, made by New and removed when its test ends.
type NS struct {
	Name string
	*nsexec.NS
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

// New makes the namespace name with its loopback up and opens it; a test
// not run as root is skipped (CI runs as root).
func New(t testing.TB, name string) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces (CI runs as root)")
	}
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	Run(t, "ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
	ns, err := nsexec.FromPath("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Close() })
	return &NS{Name: name, NS: ns}
}

// Exec runs a command inside the namespace (ip netns exec).
func (n *NS) Exec(t testing.TB, args ...string) string {
	t.Helper()
	return Run(t, append([]string{"ip", "netns", "exec", n.Name}, args...)...)
}
