package doctor

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"terok.dev/sandbox/common/testkit"
)

func ptr[T any](v T) *T { return &v }

func TestSandboxChecksOrderAndProbes(t *testing.T) {
	all := SandboxChecks(ptr(18731), ptr(18732), ptr("up"))
	var labels []string
	for _, c := range all {
		labels = append(labels, c.Label)
	}
	if !reflect.DeepEqual(labels, []string{"Credential proxy (TCP)", "SSH agent (TCP)", "Shield state"}) {
		t.Fatalf("labels %q", labels)
	}
	if !reflect.DeepEqual(all[0].ProbeCmd, []string{"wget", "-q", "--spider", "--timeout=3", "http://host.containers.internal:18731/-/health"}) {
		t.Fatalf("proxy probe %q", all[0].ProbeCmd)
	}
	if !reflect.DeepEqual(all[1].ProbeCmd, []string{"bash", "-c", "echo | nc -w2 host.containers.internal 18732"}) {
		t.Fatalf("ssh probe %q", all[1].ProbeCmd)
	}
	if !all[2].HostSide || len(all[2].ProbeCmd) != 0 || len(all[2].FixCmd) != 0 || all[2].Category != "shield" {
		t.Fatalf("shield check %+v", all[2])
	}
	if all[0].Category != "network" || all[1].Category != "network" {
		t.Fatal("categories")
	}
	if got := SandboxChecks(nil, nil, nil); len(got) != 1 || got[0].Label != "Shield state" {
		t.Fatalf("only shield expected, got %d", len(got))
	}
	if got := SandboxChecks(nil, ptr(1), nil); len(got) != 2 || got[0].Label != "SSH agent (TCP)" {
		t.Fatal("ssh only")
	}
}

func TestEvaluate(t *testing.T) {
	checks := SandboxChecks(ptr(18731), ptr(18732), nil)
	cases := []struct {
		check  Check
		exit   int
		stdout string
		want   Verdict
	}{
		{checks[0], 0, "", Verdict{OK, "proxy reachable at port 18731", false}},
		{checks[0], 8, "", Verdict{Error, "proxy unreachable at http://host.containers.internal:18731/-/health — check host proxy status", false}},
		{checks[1], 0, "", Verdict{OK, "SSH agent reachable at port 18732", false}},
		{checks[1], 1, "", Verdict{Error, "SSH agent unreachable at port 18732 — check host proxy", false}},
		{checks[2], 0, "", Verdict{OK, "no desired state configured — shield not managed", false}},
		{SandboxChecks(nil, nil, ptr("up"))[0], 0, " up\n", Verdict{OK, "shield state matches desired (up)", false}},
		{SandboxChecks(nil, nil, ptr("up"))[0], 0, "down", Verdict{Warn, "shield state mismatch: actual='down', desired='up'", true}},
		{SandboxChecks(nil, nil, ptr("down_all"))[0], 0, "", Verdict{Warn, "shield state mismatch: actual='', desired='down_all'", true}},
	}
	for i, c := range cases {
		if got := c.check.Evaluate(ProbeOutput{Exit: c.exit, Stdout: c.stdout}); got != c.want {
			t.Errorf("%d: got %+v want %+v", i, got, c.want)
		}
	}
	for s, ok := range map[string]bool{"up": true, "down": true, "down_all": true, "UP": false, "": false} {
		if ValidDesiredState(s) != ok {
			t.Errorf("ValidDesiredState(%q)", s)
		}
	}
}

func TestStandaloneAgainstRealServices(t *testing.T) {
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/health" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer health.Close()
	hp, _ := strconv.Atoi(health.URL[len("http://127.0.0.1:"):])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	sp := ln.Addr().(*net.TCPAddr).Port
	// A closed port: bind and release.
	dp := testkit.FreePort(t)

	res := RunStandalone(context.Background(), SandboxChecks(&hp, &sp, nil), ProbeTimeout)
	if ExitCode(res) != 0 {
		t.Fatalf("healthy services: %+v", res)
	}
	var buf bytes.Buffer
	Format(&buf, res)
	want := "  Credential proxy (TCP) .... ok (proxy reachable at port " + strconv.Itoa(hp) + ")\n" +
		"  SSH agent (TCP) .... ok (SSH agent reachable at port " + strconv.Itoa(sp) + ")\n" +
		"  Shield state .... ok (no desired state configured — shield not managed)\n"
	if buf.String() != want {
		t.Fatalf("output\n%s\nwant\n%s", buf.String(), want)
	}

	res = RunStandalone(context.Background(), SandboxChecks(&dp, &dp, nil), ProbeTimeout)
	if ExitCode(res) != 2 || res[0].Severity != Error || res[1].Severity != Error {
		t.Fatalf("dead port: %+v", res)
	}

	// A server answering errors (e.g. 401 on a wrong path) is unreachable for the check.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }))
	defer bad.Close()
	bp, _ := strconv.Atoi(bad.URL[len("http://127.0.0.1:"):])
	if res := RunStandalone(context.Background(), SandboxChecks(&bp, nil, nil), ProbeTimeout); res[0].Severity != Error {
		t.Fatalf("401 counted as healthy: %+v", res)
	}
}

func TestStandaloneTimeoutAndMissingProbe(t *testing.T) {
	hang := Check{Label: "hang", Native: func(ctx context.Context) ProbeOutput {
		<-ctx.Done()
		return ProbeOutput{}
	}, Evaluate: func(p ProbeOutput) Verdict {
		if p.Exit == 1 && p.Stderr == "probe command unavailable or timed out" {
			return Verdict{Severity: Error, Detail: "timed out"}
		}
		return Verdict{Severity: OK}
	}}
	noProbe := hang
	noProbe.Native = nil
	res := RunStandalone(context.Background(), []Check{hang, noProbe}, 50*time.Millisecond)
	if res[0].Detail != "timed out" || res[1].Detail != "timed out" {
		t.Fatalf("%+v", res)
	}
}

func TestExitCodeAndTags(t *testing.T) {
	mk := func(s ...Severity) []Result {
		var r []Result
		for _, x := range s {
			r = append(r, Result{Verdict: Verdict{Severity: x}})
		}
		return r
	}
	cases := []struct {
		in   []Result
		want int
	}{{mk(), 0}, {mk(OK, OK), 0}, {mk(OK, Warn), 1}, {mk(Warn, Error, OK), 2}, {mk(Error), 2}}
	for _, c := range cases {
		if got := ExitCode(c.in); got != c.want {
			t.Errorf("ExitCode(%v) = %d want %d", c.in, got, c.want)
		}
	}
	if Tag(OK) != "ok" || Tag(Warn) != "WARN" || Tag(Error) != "ERROR" {
		t.Fatal("tags")
	}
}

func TestDaemonCheckVerdicts(t *testing.T) {
	gate, agent := GateCheck(9418), AgentHealthCheck(18732)
	for _, c := range []struct {
		check          Check
		exit           int
		stdout, stderr string
		sev            Severity
		detail         string
	}{
		{gate, 0, `{"status":"ok"}`, "", OK, "gate healthy at port 9418"},
		{gate, 8, `{"status":"error","error":"tokens-file"}`, "503 Service Unavailable", Error, "gate at port 9418 answers but is unhealthy (tokens-file) — its log has the cause"},
		{gate, 8, "not json", "503 Service Unavailable", Error, "gate at port 9418 answers but is unhealthy (503 Service Unavailable) — its log has the cause"},
		{gate, 4, "", "connection refused", Error, "gate unreachable at http://host.containers.internal:9418/-/health — tasks cannot clone or push"},
		{agent, 0, "ok", "", OK, "SSH agent healthy at port 18732"},
		{agent, 8, "error database", "", Error, `SSH agent at port 18732 answers "error database" — its log (the proxy's) has the cause`},
		{agent, 1, "", "no answer: EOF", Error, "SSH agent at port 18732 gave no health answer (no answer: EOF)"},
	} {
		v := c.check.Evaluate(ProbeOutput{Exit: c.exit, Stdout: c.stdout, Stderr: c.stderr})
		if v.Severity != c.sev || v.Detail != c.detail {
			t.Errorf("%s evaluate(%d, %q, %q) = %+v, want %s %q", c.check.Label, c.exit, c.stdout, c.stderr, v, c.sev, c.detail)
		}
	}
}

func TestFormatFix(t *testing.T) {
	var buf bytes.Buffer
	Format(&buf, []Result{
		{Label: "Gate server (HTTP)", Verdict: Verdict{Severity: Error, Detail: "down"}, Fix: FixGate},
		{Label: "Shield state", Verdict: Verdict{Severity: OK, Detail: "fine"}},
	})
	want := "  Gate server (HTTP) .... ERROR (down)\n      fix: terok-sandbox gate start\n  Shield state .... ok (fine)\n"
	if buf.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", buf.String(), want)
	}
	res := RunStandalone(context.Background(), []Check{{Label: "x", HostSide: true, HostFix: "fix-it",
		Evaluate: func(ProbeOutput) Verdict { return Verdict{Severity: OK} }}}, ProbeTimeout)
	if res[0].Fix != "" {
		t.Fatalf("an ok check carries its fix: %+v", res[0])
	}
}
