package doctor_test

import (
	"fmt"
	"os"

	"terok.dev/sandbox/runner/doctor"
)

// An orchestrator runs each check's ProbeCmd in the task container
// (podman exec) and hands its exit code and output to Evaluate; the shield
// check is fed the live state from the host instead.
func ExampleSandboxChecks() {
	checks, err := doctor.SandboxChecks(doctor.InContainer{ProxyPort: 18731, DesiredShield: "up"})
	if err != nil {
		panic(err)
	}
	for _, c := range checks {
		fmt.Println(c.Category, c.Label, c.HostSide, c.ProbeCmd)
	}
	proxy, shield := checks[0], checks[1]
	fmt.Println(proxy.Evaluate(doctor.ProbeOutput{Exit: 0}))
	v := shield.Evaluate(doctor.ProbeOutput{Stdout: "down\n"})
	fmt.Println(v.Severity, v.Fixable, v.Detail)
	results := []doctor.Result{{Label: "Shield state", Verdict: v, Fix: "terok-sandbox shield up NAME"}}
	doctor.Format(os.Stdout, results)
	fmt.Println(doctor.ExitCode(results))
	// Output:
	// network Credential proxy (TCP) false [wget -q --spider --timeout=3 http://host.containers.internal:18731/-/health]
	// shield Shield state true []
	// {ok proxy reachable at port 18731 false}
	// warn true shield state mismatch: actual='down', desired='up'
	//   Shield state .... WARN (shield state mismatch: actual='down', desired='up')
	//       fix: terok-sandbox shield up NAME
	// 1
}
