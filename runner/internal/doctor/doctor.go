// Package doctor holds the sandbox health checks (docs/runner.md, Doctor): each check
// has a probe run inside a task container (or on the host for host-side
// checks) and an evaluate function turning the probe result into a verdict.
// The standalone `terok-sandbox doctor` runs them on the host with native
// probes.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Severity of a verdict.
type Severity string

// Severities.
const (
	OK    Severity = "ok"
	Warn  Severity = "warn"
	Error Severity = "error"
)

// Verdict is a check's outcome.
type Verdict struct {
	Severity Severity `json:"severity"`
	Detail   string   `json:"detail"`
	Fixable  bool     `json:"fixable"`
}

// ProbeOutput is what a check's probe gave: its exit code and its output.
// One value rather than an int and two strings, so stdout and stderr cannot
// be swapped on the way to Evaluate.
type ProbeOutput struct {
	Exit   int
	Stdout string
	Stderr string
}

// Check is one health check (docs/runner.md, Doctor).
type Check struct {
	Category string
	Label    string
	// ProbeCmd runs inside the container (podman exec); empty for host-side
	// checks.
	ProbeCmd []string
	// Evaluate interprets the probe's exit code and output.
	Evaluate       func(ProbeOutput) Verdict
	FixCmd         []string
	FixDescription string
	HostSide       bool
	// Native is the host-side equivalent of ProbeCmd used by the standalone
	// doctor (host.containers.internal → 127.0.0.1); nil for host-side
	// checks.
	Native func(ctx context.Context) ProbeOutput
	// HostFix is the host command that fixes a failed check, printed by
	// the standalone doctor under the check's line; empty when none.
	HostFix string
}

// ValidDesiredState reports whether s is up, down or down_all.
func ValidDesiredState(s string) bool { return s == "up" || s == "down" || s == "down_all" }

// ContainerHost is how a task container names the host.
const ContainerHost = "host.containers.internal"

// ProbeTimeout bounds each standalone probe (docs/runner.md, Doctor).
const ProbeTimeout = 5 * time.Second

// SandboxChecks returns, in order: the proxy check (if proxyPort is set),
// the SSH agent check (if sshPort is set) and the shield check.
func SandboxChecks(proxyPort, sshPort *int, desiredShield *string) []Check {
	var checks []Check
	if proxyPort != nil {
		checks = append(checks, proxyCheck(*proxyPort))
	}
	if sshPort != nil {
		checks = append(checks, sshCheck(*sshPort))
	}
	return append(checks, shieldCheck(desiredShield))
}

func proxyCheck(port int) Check {
	url := fmt.Sprintf("http://%s:%d/-/health", ContainerHost, port)
	return Check{
		Category: "network",
		Label:    "Credential proxy (TCP)",
		// The unauthenticated health endpoint: "/" answers 401 on a healthy
		// proxy, which wget reports as failure.
		ProbeCmd: []string{"wget", "-q", "--spider", "--timeout=3", url},
		Evaluate: func(p ProbeOutput) Verdict {
			if p.Exit == 0 {
				return Verdict{Severity: OK, Detail: fmt.Sprintf("proxy reachable at port %d", port)}
			}
			return Verdict{Severity: Error, Detail: fmt.Sprintf("proxy unreachable at %s — check host proxy status", url)}
		},
		FixDescription: "Not fixable from container — host-side proxy must be running.",
		Native: func(ctx context.Context) ProbeOutput {
			return httpProbe(ctx, fmt.Sprintf("http://127.0.0.1:%d/-/health", port), 3*time.Second)
		},
	}
}

func sshCheck(port int) Check {
	return Check{
		Category: "network",
		Label:    "SSH agent (TCP)",
		ProbeCmd: []string{"bash", "-c", fmt.Sprintf("echo | nc -w2 %s %d", ContainerHost, port)},
		Evaluate: func(p ProbeOutput) Verdict {
			if p.Exit == 0 {
				return Verdict{Severity: OK, Detail: fmt.Sprintf("SSH agent reachable at port %d", port)}
			}
			return Verdict{Severity: Error, Detail: fmt.Sprintf("SSH agent unreachable at port %d — check host proxy", port)}
		},
		FixDescription: "Not fixable from container — host-side SSH agent must be running.",
		Native: func(ctx context.Context) ProbeOutput {
			return tcpProbe(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 2*time.Second)
		},
	}
}

func shieldCheck(desired *string) Check {
	return Check{
		Category: "shield",
		Label:    "Shield state",
		HostSide: true,
		Evaluate: func(p ProbeOutput) Verdict {
			if desired == nil || *desired == "" {
				return Verdict{Severity: OK, Detail: "no desired state configured — shield not managed"}
			}
			actual := strings.TrimSpace(p.Stdout)
			if actual == *desired {
				return Verdict{Severity: OK, Detail: fmt.Sprintf("shield state matches desired (%s)", *desired)}
			}
			return Verdict{Severity: Warn, Fixable: true,
				Detail: fmt.Sprintf("shield state mismatch: actual='%s', desired='%s'", actual, *desired)}
		},
		FixCmd:         []string{},
		FixDescription: "Restore shield to desired state (up/down).",
	}
}

// unavailable is the probe's stderr for a missing program or a timeout.
const unavailable = "probe command unavailable or timed out"

// probeUnavailable is the probe output for a missing program or a timeout.
var probeUnavailable = ProbeOutput{Exit: 1, Stderr: unavailable}

// httpProbe GETs url like `wget -q --spider`: 0 for a 2xx/3xx answer, 8
// (wget's "server issued an error response") for others, 4 (network
// failure) when no answer came. stdout is the body (at most 64 KiB).
func httpProbe(ctx context.Context, url string, timeout time.Duration) ProbeOutput {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ProbeOutput{Exit: 1, Stderr: err.Error()}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return ProbeOutput{Exit: 1, Stderr: unavailable}
		}
		return ProbeOutput{Exit: 4, Stderr: err.Error()}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return ProbeOutput{Stdout: string(body)}
	}
	return ProbeOutput{Exit: 8, Stdout: string(body), Stderr: resp.Status}
}

// tcpProbe connects like `echo | nc -w2`: 0 when the connection opens.
func tcpProbe(ctx context.Context, addr string, timeout time.Duration) ProbeOutput {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ProbeOutput{Exit: 1, Stderr: err.Error()}
	}
	_, _ = c.Write([]byte("\n"))
	_ = c.Close()
	return ProbeOutput{}
}

// Result is a check's label with its verdict.
type Result struct {
	Category string `json:"category"`
	Label    string `json:"label"`
	Verdict
	// Fix is the check's HostFix when the verdict is not ok.
	Fix string `json:"fix,omitempty"`
}

// RunStandalone runs checks on the host (docs/runner.md, Doctor): host-side checks
// are evaluated with a zero ProbeOutput; probe checks run their native
// probe within timeout, a missing probe or a timeout giving
// ProbeOutput{Exit: 1, Stderr: "probe command unavailable or timed out"}.
func RunStandalone(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	results := make([]Result, 0, len(checks))
	for _, c := range checks {
		var v Verdict
		switch {
		case c.HostSide:
			v = c.Evaluate(ProbeOutput{})
		case c.Native == nil:
			v = c.Evaluate(probeUnavailable)
		default:
			pctx, cancel := context.WithTimeout(ctx, timeout)
			out := c.Native(pctx)
			if pctx.Err() != nil {
				out = probeUnavailable
			}
			cancel()
			v = c.Evaluate(out)
		}
		r := Result{Category: c.Category, Label: c.Label, Verdict: v}
		if v.Severity != OK {
			r.Fix = c.HostFix
		}
		results = append(results, r)
	}
	return results
}

// Tag is the printed severity.
func Tag(s Severity) string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "WARN"
	default:
		return "ERROR"
	}
}

// Format prints one line per result: `  <label> .... <tag> (<detail>)`,
// followed by `      fix: <command>` for a failed check that has one.
func Format(w io.Writer, results []Result) {
	for _, r := range results {
		fmt.Fprintf(w, "  %s .... %s (%s)\n", r.Label, Tag(r.Severity), r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", r.Fix)
		}
	}
}

// ExitCode is 2 if any result is an error, else 1 if any is a warning,
// else 0.
func ExitCode(results []Result) int {
	code := 0
	for _, r := range results {
		switch r.Severity {
		case Error:
			return 2
		case Warn:
			code = 1
		}
	}
	return code
}
