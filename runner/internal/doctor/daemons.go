package doctor

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/config"
)

// Fix commands the standalone doctor prints under a failed daemon check
// (docs/runner.md, Doctor).
const (
	FixProxy = "terok-sandbox proxy start"
	FixGate  = "terok-sandbox gate start"
	// The proxy supervises the agent (docs/credential-proxy.md): a proxy
	// that runs with a broken agent is restarted.
	FixAgent = "terok-sandbox proxy stop; terok-sandbox proxy start"
)

// StandaloneChecks is what `terok-sandbox doctor` (and setup) run on the
// host: the sandbox checks, the health of the gate and the SSH agent, then
// the host-side hardening checks (docs/runner.md, Doctor).
func StandaloneChecks(cfg config.Config, euid int) []Check {
	proxy, ssh := cfg.ProxyPort, cfg.SSHAgentPort
	checks := SandboxChecks(&proxy, &ssh, nil)
	for i := range checks {
		switch checks[i].Label {
		case "Credential proxy (TCP)":
			checks[i].HostFix = FixProxy
		case "SSH agent (TCP)":
			checks[i].HostFix = FixProxy
		}
	}
	checks = append(checks, GateCheck(cfg.GatePort), AgentHealthCheck(cfg.SSHAgentPort))
	return append(checks, HostChecks(cfg, euid)...)
}

// GateCheck asks the gate's unauthenticated health answer (docs/gate.md,
// Health): ok when it answers 2xx, an error naming what the gate reports
// when it answers otherwise (503 {"error":"tokens-file"}), unreachable when
// nothing answers.
func GateCheck(port int) Check {
	url := fmt.Sprintf("http://%s:%d/-/health", ContainerHost, port)
	return Check{
		Category: "git",
		Label:    "Gate server (HTTP)",
		ProbeCmd: []string{"wget", "-q", "--spider", "--timeout=3", url},
		Evaluate: func(p ProbeOutput) Verdict {
			switch p.Exit {
			case 0:
				return Verdict{Severity: OK, Detail: fmt.Sprintf("gate healthy at port %d", port)}
			case 8:
				what := strings.TrimSpace(p.Stderr)
				var a struct{ Error string }
				if json.Unmarshal([]byte(p.Stdout), &a) == nil && a.Error != "" {
					what = a.Error
				}
				return Verdict{Severity: Error, Detail: fmt.Sprintf("gate at port %d answers but is unhealthy (%s) — its log has the cause", port, what)}
			default:
				return Verdict{Severity: Error, Detail: fmt.Sprintf("gate unreachable at %s — tasks cannot clone or push", url)}
			}
		},
		FixDescription: "Not fixable from container — host-side gate must be running.",
		HostFix:        FixGate,
		Native: func(ctx context.Context) ProbeOutput {
			return httpProbe(ctx, fmt.Sprintf("http://127.0.0.1:%d/-/health", port), 3*time.Second)
		},
	}
}

// AgentHealthCheck sends the SSH agent's health handshake (docs/ssh-agent.md,
// Health): ok on "ok", an error with the agent's answer ("error database")
// otherwise.
func AgentHealthCheck(port int) Check {
	return Check{
		Category: "network",
		Label:    "SSH agent health",
		ProbeCmd: []string{"bash", "-c", fmt.Sprintf(`printf '\0\0\0\014terok-health' | nc -w2 %s %d | grep -qx ok`, ContainerHost, port)},
		Evaluate: func(p ProbeOutput) Verdict {
			switch p.Exit {
			case 0:
				return Verdict{Severity: OK, Detail: fmt.Sprintf("SSH agent healthy at port %d", port)}
			case 8:
				return Verdict{Severity: Error, Detail: fmt.Sprintf("SSH agent at port %d answers %q — its log (the proxy's) has the cause", port, strings.TrimSpace(p.Stdout))}
			default:
				return Verdict{Severity: Error, Detail: fmt.Sprintf("SSH agent at port %d gave no health answer (%s)", port, strings.TrimSpace(p.Stderr))}
			}
		},
		FixDescription: "Not fixable from container — host-side SSH agent must be running.",
		HostFix:        FixAgent,
		Native: func(ctx context.Context) ProbeOutput {
			return agentHealthProbe(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 3*time.Second)
		},
	}
}

// agentHealthHello is the handshake value reserved for health requests.
const agentHealthHello = "terok-health"

// agentHealthProbe: 0 when the agent answers "ok", 8 with the answer as
// stdout when it answers something else, 1 when it does not answer.
func agentHealthProbe(ctx context.Context, addr string, timeout time.Duration) ProbeOutput {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ProbeOutput{Exit: 1, Stderr: err.Error()}
	}
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(agentHealthHello)))
	if _, err := c.Write(append(msg, agentHealthHello...)); err != nil {
		return ProbeOutput{Exit: 1, Stderr: err.Error()}
	}
	line, err := bufio.NewReader(&limitedConn{c, 256}).ReadString('\n')
	answer := strings.TrimSpace(line)
	switch {
	case answer == "ok":
		return ProbeOutput{Stdout: "ok"}
	case answer != "":
		return ProbeOutput{Exit: 8, Stdout: answer}
	case err != nil:
		return ProbeOutput{Exit: 1, Stderr: "no answer: " + err.Error()}
	default:
		return ProbeOutput{Exit: 1, Stderr: "no answer"}
	}
}

// limitedConn reads at most n bytes: an answer is one short line.
type limitedConn struct {
	c net.Conn
	n int
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("answer longer than 256 bytes")
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= n
	return n, err
}
