// Package doctor is the public set of sandbox health checks
// (docs/runner.md, Doctor). A Check has a probe to run inside a task
// container (ProbeCmd, through podman exec) or on the host (Native), and an
// Evaluate that turns the probe's exit code and output into a Verdict; a
// failed check names its fix (FixDescription in the container, HostFix on
// the host).
package doctor

import (
	"context"
	"fmt"
	"io"
	"time"

	"terok.dev/sandbox/common/config"
	idoctor "terok.dev/sandbox/runner/internal/doctor"
)

// Severity of a verdict: OK, Warn or Error.
type Severity = idoctor.Severity

// The severities.
const (
	OK    = idoctor.OK
	Warn  = idoctor.Warn
	Error = idoctor.Error
)

// Verdict is a check's outcome: severity, detail, and whether FixCmd can
// repair it from inside the container.
type Verdict = idoctor.Verdict

// Check is one health check.
type Check = idoctor.Check

// ProbeOutput is a probe's exit code, stdout and stderr, what a Check's
// Evaluate takes (and its Native returns).
type ProbeOutput = idoctor.ProbeOutput

// Result is a check's category and label with its verdict and, when the
// verdict is not OK, the host fix command.
type Result = idoctor.Result

// The host commands printed under a failed daemon check.
const (
	FixProxy = idoctor.FixProxy
	FixGate  = idoctor.FixGate
	// FixAgent restarts the proxy, which supervises the SSH agent.
	FixAgent = idoctor.FixAgent
)

// ProbeTimeout is the default bound of each probe Run makes.
const ProbeTimeout = idoctor.ProbeTimeout

// InContainer says which in-container checks to build; a zero field skips
// that check.
type InContainer struct {
	// ProxyPort is the credential proxy's TCP port on the host.
	ProxyPort int
	// SSHAgentPort is the SSH agent's TCP port on the host.
	SSHAgentPort int
	// DesiredShield is the shield state the task should be in ("up",
	// "down", "down_all"); "" means the shield is not managed and its
	// check always passes.
	DesiredShield string
}

// SandboxChecks are the checks of a task container, in order: the proxy
// (when ProxyPort is set), the SSH agent (when SSHAgentPort is set), the
// shield state (always; a host-side check fed the live state as stdout).
// A DesiredShield other than up, down or down_all is an error.
func SandboxChecks(in InContainer) ([]Check, error) {
	var proxy, ssh *int
	var shield *string
	if in.ProxyPort != 0 {
		proxy = &in.ProxyPort
	}
	if in.SSHAgentPort != 0 {
		ssh = &in.SSHAgentPort
	}
	if in.DesiredShield != "" {
		if !idoctor.ValidDesiredState(in.DesiredShield) {
			return nil, fmt.Errorf("desired shield state %q is not up, down or down_all", in.DesiredShield)
		}
		shield = &in.DesiredShield
	}
	for _, p := range []int{in.ProxyPort, in.SSHAgentPort} {
		if p < 0 || p > 65535 {
			return nil, fmt.Errorf("port %d is out of range (1-65535)", p)
		}
	}
	return idoctor.SandboxChecks(proxy, ssh, shield), nil
}

// HostChecks are the checks `terok-sandbox doctor` runs on the host for
// cfg: the sandbox checks with native probes, the gate's and the SSH
// agent's health, then the host's hardening (seccomp profile, secrets
// store, the static marker switch).
func HostChecks(cfg config.Config, env config.Env) []Check {
	return idoctor.StandaloneChecks(cfg, env.EUID)
}

// Run runs checks on the host: host-side checks are evaluated as passed
// probes, the others run their Native probe within timeout (0 =
// ProbeTimeout); a missing probe or a timeout is a failed probe.
func Run(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	if timeout <= 0 {
		timeout = ProbeTimeout
	}
	return idoctor.RunStandalone(ctx, checks, timeout)
}

// Format prints the results as the CLI does: one line per result and the
// fix command under a failed one.
func Format(w io.Writer, results []Result) { idoctor.Format(w, results) }

// ExitCode is the CLI's exit status for results: 2 on any error, 1 on any
// warning, else 0.
func ExitCode(results []Result) int { return idoctor.ExitCode(results) }
