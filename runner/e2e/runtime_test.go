//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/runner/internal/testharness"
)

// e2eCtx bounds one e2e step; generous, it only guards against hangs.
func e2eCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustOK(t *testing.T, what string, res testharness.Result) testharness.Result {
	t.Helper()
	if res.Code != 0 {
		t.Fatalf("%s: %s", what, res)
	}
	return res
}

// A launched container gets its env and volumes, runs with NoNewPrivs, and
// (rootless) sees the caller as uid 1000 whose files land on the host as
// the caller's; logs stream to the ready marker and wait returns the exit
// code; stop removes the container.
func TestRunLifecycle(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		data := filepath.Join(r.Base, "data")
		if err := r.Mkdir(data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := r.WriteFile(filepath.Join(data, "in.txt"), []byte("from-the-host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		name := r.Name("life")
		script := `cat /data/in.txt; echo "greeting=$GREETING"; echo "secret-len=${#API_TOKEN}"; grep NoNewPrivs /proc/self/status; ` +
			`echo "uid=$(id -u)"; echo "pwd=$(pwd)"; echo written > /data/out.txt; echo '>> init complete'; sleep 1; exit 42`
		res := mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"-e", "GREETING=hello world", "-e", "API_TOKEN=do-not-print-me", "-v", data+":/data",
			"--", "bash", "-c", script))
		if !strings.Contains(res.Stdout, "$ podman run -d ") || !strings.Contains(res.Stdout, "'API_TOKEN=<redacted>'") {
			t.Fatalf("command line not printed or not redacted:\n%s", res.Stdout)
		}
		if strings.Contains(res.Stdout+res.Stderr, "do-not-print-me") {
			t.Fatal("secret printed")
		}
		if (r.User != nil) != strings.Contains(res.Stdout, "--userns=keep-id:uid=1000,gid=1000") {
			t.Fatalf("userns argument wrong for %s:\n%s", r.Kind, res.Stdout)
		}

		logs := mustOK(t, "logs --until-ready", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		wantUID := "uid=0"
		if r.User != nil {
			wantUID = "uid=1000"
		}
		for _, want := range []string{"from-the-host", "greeting=hello world", "secret-len=15", "NoNewPrivs:\t1", wantUID, "pwd=/workspace", ">> init complete"} {
			if !strings.Contains(logs.Stdout, want) {
				t.Errorf("logs lack %q:\n%s", want, logs.Stdout)
			}
		}

		wait := r.Sandbox(ctx, "wait", name, "--timeout", "120")
		if wait.Code != 42 {
			t.Fatalf("wait: want exit 42: %s", wait)
		}
		fi, err := os.Stat(filepath.Join(data, "out.txt"))
		if err != nil {
			t.Fatalf("container write did not reach the volume: %v", err)
		}
		if owner := int(fi.Sys().(*syscall.Stat_t).Uid); owner != r.UID() {
			t.Fatalf("file written in the container is owned by host uid %d, want the caller %d", owner, r.UID())
		}

		if st := mustOK(t, "state", r.Sandbox(ctx, "state", name)); strings.TrimSpace(st.Stdout) != "exited" {
			t.Fatalf("state %q", st.Stdout)
		}
		mustOK(t, "stop", r.Sandbox(ctx, "stop", name))
		if st := r.Sandbox(ctx, "state", name); st.Code != 1 {
			t.Fatalf("state after stop: %s", st)
		}
		if ex := r.Podman(ctx, "container", "exists", name); ex.Code == 0 {
			t.Fatal("container still exists after stop")
		}
	})
}

// The spec file's fields arrive, env in ascending name order; unrestricted
// drops no-new-privileges.
func TestRunSpecFile(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("spec")
		spec, _ := json.Marshal(map[string]any{
			"container_name": name, "image": H(t).Image, "task_dir": filepath.Join(r.Base, "task"),
			"env":     map[string]string{"ZETA": "z", "ALPHA": "a"},
			"volumes": []string{}, "unrestricted": true,
			"command": []string{"sh", "-c", "env | grep -E '^(ALPHA|ZETA)='; grep NoNewPrivs /proc/self/status; echo '>> init complete'"},
		})
		path := filepath.Join(r.Base, "spec.json")
		if err := r.WriteFile(path, spec, 0o644); err != nil {
			t.Fatal(err)
		}
		res := mustOK(t, "run --spec", r.Sandbox(ctx, "run", "--shield-bypass", "--spec", path))
		if strings.Contains(res.Stdout, "no-new-privileges") {
			t.Fatalf("unrestricted run kept no-new-privileges:\n%s", res.Stdout)
		}
		if !strings.Contains(res.Stdout, "-e ALPHA=a -e ZETA=z") {
			t.Fatalf("env not in ascending order:\n%s", res.Stdout)
		}
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		for _, want := range []string{"ALPHA=a", "ZETA=z", "NoNewPrivs:\t0"} {
			if !strings.Contains(logs.Stdout, want) {
				t.Errorf("logs lack %q:\n%s", want, logs.Stdout)
			}
		}
	})
}

// Labels, ps and logs against real podman (docs/runner.md, Labels): run
// --project/--task labels the container; ps without --prefix finds it by
// label, --project narrows to it, --json is podman's own ps objects; logs
// --tail and --since select lines.
func TestLabelsPsAndLogs(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("lbl")
		project := r.Prefix + "-proj"
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image, "--project", project, "--task", "t1",
			"--extra-arg", "--stop-timeout=1", "--", "sh", "-c", "echo one; echo two; echo '>> init complete'; trap 'exit 0' TERM; while :; do sleep 1; done"))
		mustOK(t, "logs --until-ready", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		if ps := mustOK(t, "ps", r.Sandbox(ctx, "ps")); !slices.Contains(strings.Split(ps.Stdout, "\n"), name+" running") {
			t.Fatalf("ps by label lacks %s:\n%s", name, ps.Stdout)
		}
		if ps := mustOK(t, "ps --project", r.Sandbox(ctx, "ps", "--project", project)); strings.TrimSpace(ps.Stdout) != name+" running" {
			t.Fatalf("ps --project %q", ps.Stdout)
		}
		if ps := mustOK(t, "ps --project other", r.Sandbox(ctx, "ps", "--project", project+"-other")); ps.Stdout != "" {
			t.Fatalf("ps --project of another project %q", ps.Stdout)
		}
		var ours []map[string]any
		if err := json.Unmarshal([]byte(mustOK(t, "ps --json", r.Sandbox(ctx, "ps", "--json", "--project", project)).Stdout), &ours); err != nil || len(ours) != 1 {
			t.Fatalf("ps --json: %v %v", err, ours)
		}
		var podmans []map[string]any
		if err := json.Unmarshal([]byte(r.Podman(ctx, "ps", "-a", "--format", "json", "--filter", "name=^"+name+"$").Stdout), &podmans); err != nil || len(podmans) != 1 {
			t.Fatalf("podman ps: %v %v", err, podmans)
		}
		if ours[0]["Id"] != podmans[0]["Id"] || len(ours[0]) != len(podmans[0]) {
			t.Fatalf("ps --json is not podman's object:\n%v\n%v", ours[0], podmans[0])
		}
		labels, _ := ours[0]["Labels"].(map[string]any)
		for k, v := range map[string]string{"dev.terok.sandbox.project": project, "dev.terok.sandbox.task": "t1"} {
			if labels[k] != v {
				t.Errorf("label %s = %v, want %s (labels %v)", k, labels[k], v, labels)
			}
		}
		if labels["dev.terok.sandbox.runner-version"] == nil {
			t.Errorf("no runner-version label: %v", labels)
		}
		if lg := mustOK(t, "logs --tail", r.Sandbox(ctx, "logs", "--tail", "1", name)); strings.TrimSpace(lg.Stdout) != ">> init complete" {
			t.Errorf("logs --tail 1 %q", lg.Stdout)
		}
		if lg := mustOK(t, "logs --since", r.Sandbox(ctx, "logs", "--since", "2030-01-01T00:00:00Z", name)); strings.TrimSpace(lg.Stdout) != "" {
			t.Errorf("logs --since the future %q", lg.Stdout)
		}
		if lg := mustOK(t, "logs --since", r.Sandbox(ctx, "logs", "--since", "1h", name)); !strings.Contains(lg.Stdout, "one") {
			t.Errorf("logs --since 1h %q", lg.Stdout)
		}
		mustOK(t, "stop", r.Sandbox(ctx, "stop", name))
	})
}

// Timeouts: logs --until-ready and wait give 124 when the container does not
// deliver in time; a container still runs meanwhile and stop removes it.
func TestTimeouts(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("slow")
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"--extra-arg", "--stop-timeout=1", "--", "sh", "-c", "echo not-ready-yet; trap 'exit 0' TERM; while :; do sleep 1; done"))
		if res := r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "2"); res.Code != 124 || !strings.Contains(res.Stdout, "not-ready-yet") {
			t.Fatalf("logs timeout: %s", res)
		}
		if res := r.Sandbox(ctx, "wait", name, "--timeout", "1"); res.Code != 124 {
			t.Fatalf("wait timeout: %s", res)
		}
		if st := mustOK(t, "state", r.Sandbox(ctx, "state", "--json", name)); !strings.Contains(st.Stdout, `"state": "running"`) {
			t.Fatalf("state %s", st.Stdout)
		}
		ps := mustOK(t, "ps", r.Sandbox(ctx, "ps", "--prefix", r.Prefix))
		if strings.TrimSpace(ps.Stdout) != name+" running" {
			t.Fatalf("ps %q", ps.Stdout)
		}
		// Shell completion offers the runner's containers by name
		// (docs/runner.md, Shell completion).
		if comp := mustOK(t, "__complete", r.Sandbox(ctx, "__complete", "containers")); !slices.Contains(strings.Split(comp.Stdout, "\n"), name) {
			t.Fatalf("__complete containers lacks %s: %q", name, comp.Stdout)
		}
		// A name that never existed is an error, after the others are stopped.
		if res := r.Sandbox(ctx, "stop", name, r.Name("never-existed")); res.Code != 1 || !strings.Contains(res.Stderr, "no such container: "+r.Name("never-existed")) {
			t.Fatalf("stop with a missing name: %s", res)
		}
		if ps := mustOK(t, "ps", r.Sandbox(ctx, "ps", "--prefix", r.Prefix)); strings.TrimSpace(ps.Stdout) != "" {
			t.Fatalf("ps after stop %q", ps.Stdout)
		}
		if comp := mustOK(t, "__complete", r.Sandbox(ctx, "__complete", "containers")); slices.Contains(strings.Split(comp.Stdout, "\n"), name) {
			t.Fatalf("__complete containers still offers %s after stop", name)
		}
	})
}

// Without the bypass setting a container is never started unless the shield
// protects it: here the profile does not exist, so the launch must fail
// closed (today the shield may also be unavailable: same outcome).
func TestRunRefusedWithoutShield(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		if err := r.WriteConfig("shield_profiles = [\"no-such-profile-e2e\"]\n"); err != nil {
			t.Fatal(err)
		}
		name := r.Name("refused")
		res := r.Sandbox(ctx, "run", "--name", name, "--image", H(t).Image, "--task-dir", filepath.Join(r.Base, "task"), "--", "true")
		if res.Code != 1 || !strings.Contains(res.Stderr, "Error: ") {
			t.Fatalf("run without shield/bypass: %s", res)
		}
		if strings.Contains(res.Stdout, "SHIELD BYPASSED") {
			t.Fatal("bypass warning printed although bypass is not set")
		}
		if ex := r.Podman(ctx, "container", "exists", name); ex.Code == 0 {
			t.Fatal("a container was created although the firewall failed")
		}
		// The config key alone enables the bypass.
		if err := r.WriteConfig("shield_bypass = true\n"); err != nil {
			t.Fatal(err)
		}
		res = mustOK(t, "run with shield_bypass in config", r.Sandbox(ctx, "run", "--name", name, "--image", H(t).Image, "--", "true"))
		if !strings.Contains(res.Stdout, "\n!! SHIELD BYPASSED — egress firewall DISABLED (shield_bypass is set) !!\n\n") {
			t.Fatalf("no bypass warning:\n%s", res.Stdout)
		}
	})
}

// Name clash and missing image give clear errors with podman's message.
func TestRunClearErrors(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("clash")
		mustOK(t, "first run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image, "--", "sleep", "30"))
		res := r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image, "--", "true")
		if res.Code != 1 || !strings.Contains(res.Stderr, "Container launch failed:") || !strings.Contains(res.Stderr, "already in use") ||
			!strings.Contains(res.Stderr, "terok-sandbox stop "+name) {
			t.Fatalf("name clash: %s", res)
		}
		// localhost/… never leaves the machine: the pull attempt goes to 127.0.0.1.
		res = r.Sandbox(ctx, "run", "--shield-bypass", "--name", r.Name("noimg"), "--image", "localhost/terok-e2e-missing:nope", "--", "true")
		if res.Code != 1 || !strings.Contains(res.Stderr, "Container launch failed:") || !strings.Contains(res.Stderr, "localhost/terok-e2e-missing:nope") ||
			!strings.Contains(res.Stderr, "not in podman's local storage") {
			t.Fatalf("missing image: %s", res)
		}
		res = r.Sandbox(ctx, "run", "--shield-bypass", "--spec", filepath.Join(r.Base, "absent.json"))
		if res.Code != 1 || !strings.Contains(res.Stderr, "read run spec") {
			t.Fatalf("missing spec: %s", res)
		}
	})
}

// Bypass networking reaches a service bound only to the host's loopback as
// host.containers.internal, rootful and rootless (slirp4netns
// allow_host_loopback).
func TestBypassReachesHostLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello-from-host-loopback") }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("net")
		mustOK(t, "run", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image, "--",
			"sh", "-c", "curl -sS --max-time 20 http://host.containers.internal:"+port+"/; echo; echo '>> init complete'"))
		logs := mustOK(t, "logs", r.Sandbox(ctx, "logs", name, "--until-ready", "--timeout", "120"))
		if !strings.Contains(logs.Stdout, "hello-from-host-loopback") {
			t.Fatalf("host loopback service not reached:\n%s", logs.Stdout)
		}
	})
}

// The standalone doctor probes the configured ports on the host: all ok
// with services listening (exit 0), errors when they are gone (exit 2).
func TestDoctorStandalone(t *testing.T) {
	r := H(t).Root(t)
	ctx := e2eCtx(t)
	health, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/-/health" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "ok")
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(health)
	defer srv.Close()
	agent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := agent.Accept()
			if err != nil {
				return
			}
			// The agent's health handshake (docs/ssh-agent.md, Health):
			// doctor's SSH agent health check sends it; the TCP check
			// sends a newline and goes.
			buf := make([]byte, 16)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if n, _ := io.ReadFull(c, buf); n == 16 && string(buf[4:]) == "terok-health" {
				c.Write([]byte("ok\n"))
			}
			c.Close()
		}
	}()
	hp, ap := health.Addr().(*net.TCPAddr).Port, agent.Addr().(*net.TCPAddr).Port
	// The health server stands in for the gate's /-/health too.
	if err := r.WriteConfig(fmt.Sprintf("proxy_port = %d\nssh_agent_port = %d\ngate_port = %d\n", hp, ap, hp)); err != nil {
		t.Fatal(err)
	}
	res := mustOK(t, "doctor", r.Sandbox(ctx, "doctor"))
	want := fmt.Sprintf("  Credential proxy (TCP) .... ok (proxy reachable at port %d)\n  SSH agent (TCP) .... ok (SSH agent reachable at port %d)\n"+
		"  Shield state .... ok (no desired state configured — shield not managed)\n", hp, ap)
	// The host-side hardening checks follow (docs/seccomp.md; the harness
	// installs the profile).
	if !strings.HasPrefix(res.Stdout, want) || !strings.Contains(res.Stdout, "  Seccomp profile .... ok (") ||
		!strings.Contains(res.Stdout, "  Static phantom marker .... ok (") {
		t.Fatalf("doctor output\n%s\nwant\n%s(then the seccomp and static marker checks)", res.Stdout, want)
	}
	agent.Close()
	srv.Close()
	res = r.Sandbox(ctx, "doctor", "--json")
	if res.Code != 2 || !strings.Contains(res.Stdout, `"severity": "error"`) {
		t.Fatalf("doctor with services down: %s", res)
	}
}

// CLI lifecycle hooks run around the real launch: pre-start before the
// container exists (a failure prevents it), post-start once it does.
func TestRunHooks(t *testing.T) {
	H(t).Each(t, func(t *testing.T, r *testharness.Runner) {
		ctx := e2eCtx(t)
		name := r.Name("hooks")
		res := mustOK(t, "run with hooks", r.Sandbox(ctx, "run", "--shield-bypass", "--name", name, "--image", H(t).Image,
			"--pre-start-exec", `podman container exists "$TEROK_CONTAINER_NAME" && exit 9; echo pre-ok`,
			"--post-start-exec", `podman container exists "$TEROK_CONTAINER_NAME" && echo post-ok`,
			"--", "true"))
		if !strings.Contains(res.Stdout, "pre-ok") || !strings.Contains(res.Stdout, "post-ok") ||
			strings.Index(res.Stdout, "pre-ok") > strings.Index(res.Stdout, "post-ok") {
			t.Fatalf("hooks output:\n%s", res.Stdout)
		}
		blocked := r.Name("blocked")
		res = r.Sandbox(ctx, "run", "--shield-bypass", "--name", blocked, "--image", H(t).Image, "--pre-start-exec", "exit 3", "--", "true")
		if res.Code != 1 || !strings.Contains(res.Stderr, "container not started") {
			t.Fatalf("failing pre-start: %s", res)
		}
		if ex := r.Podman(ctx, "container", "exists", blocked); ex.Code == 0 {
			t.Fatal("container created although pre-start failed")
		}
	})
}
