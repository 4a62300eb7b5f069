package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"terok.dev/sandbox/common/testkit"
)

// fakePodmanOnPath installs a podman stand-in that records each call's argv
// (one line per argument, calls separated by "--END--") and answers `info`
// like a rootless slirp4netns host, `run` with an id, `wait` with 3.
func fakePodmanOnPath(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := `#!/bin/sh
printf '%s\n' "$@" >> ` + log + `
echo --END-- >> ` + log + `
` + extra + `
case "$1" in
info) echo '{"version":{"Version":"4.3.1"},"host":{"rootlessNetworkCmd":"slirp4netns"}}';;
run) echo 0123456789ab;;
wait) echo 3;;
container) [ "$4" = c1 ] && { echo '[{"Id":"c1id","State":{"Status":"Running","Running":true}}]'; exit 0; }
  echo '[]'; echo "Error: inspecting object: no such container $4" >&2; exit 125;;
ps) echo '[{"Id":"1","Names":["p.x-1"],"State":"running","Labels":{"dev.terok.sandbox.runner-version":"0.1.0-dev"}},{"Id":"2","Names":["p.x-2"],"State":"exited"}]';;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "podman"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return log
}

func calls(t *testing.T, log string) [][]string {
	t.Helper()
	data, _ := os.ReadFile(log)
	var out [][]string
	for _, c := range strings.Split(string(data), "--END--\n") {
		if c = strings.TrimSuffix(c, "\n"); c != "" {
			out = append(out, strings.Split(c, "\n"))
		}
	}
	return out
}

func runAs(t *testing.T, euid int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	home := t.TempDir()
	vars := testkit.RootVars(home) // every root: as root the defaults are /var/lib/terok, /run/terok, /etc/terok
	installTestProfile(t, vars["TEROK_SANDBOX_CONFIG_DIR"])
	env := testkit.Env(vars, euid, home)
	code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
	return code, out.String(), errb.String()
}

func lastRun(t *testing.T, log string) []string {
	t.Helper()
	cs := calls(t, log)
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i][0] == "run" {
			return cs[i]
		}
	}
	t.Fatalf("no podman run in %q", cs)
	return nil
}

func TestRunAssemblesAndPrints(t *testing.T) {
	log := fakePodmanOnPath(t, "")
	spec := filepath.Join(t.TempDir(), "spec.json")
	os.WriteFile(spec, []byte(`{"container_name":"from-file","image":"img:1","env":{"ZED":"z","API_TOKEN":"s3cret","KEEP":"file"},
		"volumes":["/f:/f"],"command":["file-cmd"],"task_dir":"/t","extra_args":["--stop-timeout=1"]}`), 0o644)

	code, out, errOut := runAs(t, 1000, "run", "--spec", spec, "--shield-bypass", "--name", "from-flag",
		"-e", "ZED=flag", "--env", "NEW=1", "-v", "/a:/b:ro,z", "--volume", "/c:/d", "--gpu", "--project", "proj", "--task", "t1", "--", "sh", "-c", "echo hi")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := []string{"run", "-d", "--userns=keep-id:uid=1000,gid=1000", "--security-opt", "no-new-privileges",
		"--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2",
		"--device", "nvidia.com/gpu=all", "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_DRIVER_CAPABILITIES=all",
		"--stop-timeout=1", "-v", "/a:/b:ro,z", "-v", "/c:/d",
		"-e", "API_TOKEN=s3cret", "-e", "KEEP=file", "-e", "NEW=1", "-e", "ZED=flag",
		"--label", "dev.terok.sandbox.runner-version=0.1.0-dev", "--label", "dev.terok.sandbox.project=proj", "--label", "dev.terok.sandbox.task=t1",
		"--name", "from-flag", "-w", "/workspace", "img:1", "sh", "-c", "echo hi"}
	if got := withoutSeccomp(t, lastRun(t, log)); !reflect.DeepEqual(got, want) {
		t.Fatalf("argv\n got %q\nwant %q", got, want)
	}
	wantOut := "\n!! SHIELD BYPASSED — egress firewall DISABLED (shield_bypass is set) !!\n\n" +
		"$ podman run -d --userns=keep-id:uid=1000,gid=1000 --security-opt no-new-privileges --network slirp4netns:allow_host_loopback=true --add-host host.containers.internal:10.0.2.2 " +
		"--device nvidia.com/gpu=all -e NVIDIA_VISIBLE_DEVICES=all -e NVIDIA_DRIVER_CAPABILITIES=all --stop-timeout=1 -v /a:/b:ro,z -v /c:/d " +
		"-e 'API_TOKEN=<redacted>' -e KEEP=file -e NEW=1 -e ZED=flag --label dev.terok.sandbox.runner-version=0.1.0-dev --label dev.terok.sandbox.project=proj --label dev.terok.sandbox.task=t1 --name from-flag -w /workspace img:1 sh -c 'echo hi'\n0123456789ab\n"
	if out := withoutPrintedSeccomp(t, out); out != wantOut {
		t.Fatalf("stdout\n%q\nwant\n%q", out, wantOut)
	}
	if strings.Contains(out+errOut, "s3cret") {
		t.Fatal("secret printed")
	}
}

func TestRunRootUsesSlirpWithoutUserns(t *testing.T) {
	log := fakePodmanOnPath(t, "")
	code, _, errOut := runAs(t, 0, "run", "--shield-bypass", "--unrestricted", "--name", "n", "--image", "i")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := []string{"run", "-d", "--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2", "--label", "dev.terok.sandbox.runner-version=0.1.0-dev", "--name", "n", "-w", "/workspace", "i"}
	if got := withoutSeccomp(t, lastRun(t, log)); !reflect.DeepEqual(got, want) {
		t.Fatalf("argv %q", got)
	}
	for _, c := range calls(t, log) {
		if c[0] == "info" {
			t.Fatal("root bypass asked podman for the rootless network mode")
		}
	}
}

func TestRunBypassFromConfigFileAndJSON(t *testing.T) {
	fakePodmanOnPath(t, "")
	var out, errb bytes.Buffer
	home := t.TempDir()
	cfgDir := filepath.Join(home, "cfg")
	os.MkdirAll(cfgDir, 0o755)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("shield_bypass = true\n"), 0o644)
	installTestProfile(t, cfgDir)
	vars := testkit.RootVars(home)
	vars["TEROK_SANDBOX_CONFIG_DIR"] = cfgDir
	env := testkit.Env(vars, 0, home)
	code := Run([]string{Program, "run", "--json", "--name", "n", "--image", "i"}, Deps{Stdout: &out, Stderr: &errb, Env: env})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res map[string]string
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res["container_id"] != "0123456789ab" || res["name"] != "n" {
		t.Fatalf("json %q: %v", out.String(), err)
	}
	if !strings.Contains(errb.String(), "SHIELD BYPASSED") || !strings.Contains(errb.String(), "$ podman run") {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestRunRefusedWithoutBypass(t *testing.T) {
	log := fakePodmanOnPath(t, "")
	code, out, errOut := runAs(t, 0, "run", "--name", "n", "--image", "i")
	if code != ExitError || !strings.Contains(errOut, "shield pre-start for n") {
		t.Fatalf("exit %d stderr %q", code, errOut)
	}
	if strings.Contains(out, "$ podman") {
		t.Fatal("command printed although refused")
	}
	for _, c := range calls(t, log) {
		if c[0] == "run" {
			t.Fatal("podman run executed without a firewall")
		}
	}
}

func TestRunErrors(t *testing.T) {
	fakePodmanOnPath(t, "")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"malformed spec", []string{"run", "--shield-bypass", "--spec", write("bad.json", `{"image": `)}, ExitError, "bad.json: run spec is not a valid JSON object"},
		{"unknown spec field", []string{"run", "--shield-bypass", "--spec", write("unk.json", `{"imagee":"x"}`)}, ExitError, `unknown field "imagee"`},
		{"missing spec file", []string{"run", "--spec", filepath.Join(dir, "nope.json")}, ExitError, "read run spec"},
		{"no name", []string{"run", "--shield-bypass", "--image", "i"}, ExitUsage, "container name is required"},
		{"no image", []string{"run", "--shield-bypass", "--name", "n"}, ExitUsage, "image is required"},
		{"env without =", []string{"run", "--shield-bypass", "--name", "n", "--image", "i", "-e", "FOO"}, ExitUsage, "expected NAME=VALUE"},
		{"env empty name", []string{"run", "--shield-bypass", "--name", "n", "--image", "i", "-e", "=x"}, ExitUsage, "name is empty"},
		{"bad flag", []string{"run", "--no-such-flag"}, ExitUsage, "flag provided but not defined"},
		{"flag-like image", []string{"run", "--shield-bypass", "--name", "n", "--image", "--privileged"}, ExitError, "must not start with '-'"},
		{"pre-start hook fails", []string{"run", "--shield-bypass", "--name", "n", "--image", "i", "--pre-start-exec", "exit 3"}, ExitError, "pre-start hook for n failed, container not started"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errOut := runAs(t, 0, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d stderr %q; want %d %q", code, errOut, c.code, c.want)
			}
		})
	}
}

func TestRunHooksOrder(t *testing.T) {
	dir := t.TempDir()
	trace := filepath.Join(dir, "trace")
	fakePodmanOnPath(t, `[ "$1" = run ] && echo podman >> `+trace)
	code, _, errOut := runAs(t, 0, "run", "--shield-bypass", "--name", "n", "--image", "i",
		"--pre-start-exec", "echo pre $TEROK_CONTAINER_NAME >> "+trace, "--post-start-exec", "echo post >> "+trace)
	if code != 0 {
		t.Fatalf("exit %d %s", code, errOut)
	}
	if data, _ := os.ReadFile(trace); string(data) != "pre n\npodman\npost\n" {
		t.Fatalf("trace %q", data)
	}
	// A failing launch never fires post-start.
	os.Remove(trace)
	fakePodmanOnPath(t, `[ "$1" = run ] && { echo 'Error: boom' >&2; exit 125; }`)
	code, _, errOut = runAs(t, 0, "run", "--shield-bypass", "--name", "n", "--image", "i", "--post-start-exec", "echo post >> "+trace)
	if code != ExitError || !strings.Contains(errOut, "Container launch failed: container creation failed.\nError: boom\n\nNo container n was left behind; the name is free.") {
		t.Fatalf("exit %d %q", code, errOut)
	}
	if _, err := os.Stat(trace); err == nil {
		t.Fatal("post-start ran after a failed launch")
	}
}

func TestRunGPUErrorHint(t *testing.T) {
	fakePodmanOnPath(t, `[ "$1" = run ] && { echo 'Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all' >&2; exit 126; }`)
	code, _, errOut := runAs(t, 0, "run", "--shield-bypass", "--gpu", "--name", "n", "--image", "i")
	if code != ExitError || !strings.Contains(errOut, "Container launch failed (GPU misconfiguration):") || !strings.Contains(errOut, "Hint: NVIDIA CDI configuration appears to be missing or broken.") {
		t.Fatalf("exit %d %q", code, errOut)
	}
}

func TestPodmanMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, args := range [][]string{{"run", "--shield-bypass", "--name", "n", "--image", "i"}, {"wait", "n"}, {"logs", "n"}} {
		code, _, errOut := runAs(t, 0, args...)
		if code != ExitError || !strings.Contains(errOut, "podman not found; please install podman") {
			t.Fatalf("%v: exit %d %q", args, code, errOut)
		}
	}
	// stop must not fail task deletion when podman is missing.
	if code, _, errOut := runAs(t, 0, "stop", "n"); code != 0 {
		t.Fatalf("stop: exit %d %q", code, errOut)
	}
}

func TestRuntimeHelpers(t *testing.T) {
	log := fakePodmanOnPath(t, "")
	cases := []struct {
		args   []string
		code   int
		out    string
		podman []string
	}{
		{[]string{"wait", "c1"}, 3, "", []string{"wait", "c1"}},
		{[]string{"wait", "c1", "--json", "--timeout", "5"}, 3, "{\n  \"exit_code\": 3,\n  \"name\": \"c1\",\n  \"timed_out\": false\n}\n", []string{"wait", "c1"}},
		{[]string{"state", "c1"}, 0, "running\n", []string{"container", "inspect", "--", "c1"}},
		{[]string{"state", "missing"}, ExitError, "", []string{"container", "inspect", "--", "missing"}},
		{[]string{"state", "--json", "c1"}, 0, "{\n  \"name\": \"c1\",\n  \"state\": \"running\"\n}\n", nil},
		{[]string{"ps", "--prefix", "p.x"}, 0, "p.x-1 running\np.x-2 exited\n", []string{"ps", "-a", "--format", "json", "--filter", `name=^p\.x-`}},
		{[]string{"ps"}, 0, "p.x-1 running\n", []string{"ps", "-a", "--format", "json", "--filter", "label=dev.terok.sandbox.runner-version"}},
		{[]string{"ps", "--project", "p"}, 0, "", []string{"ps", "-a", "--format", "json", "--filter", "label=dev.terok.sandbox.runner-version", "--filter", "label=dev.terok.sandbox.project=p"}},
		{[]string{"ps", "--json"}, 0, "[\n  {\n    \"Id\": \"1\",\n    \"Names\": [\n      \"p.x-1\"\n    ],\n    \"State\": \"running\",\n    \"Labels\": {\n      \"dev.terok.sandbox.runner-version\": \"0.1.0-dev\"\n    }\n  }\n]\n", nil},
		{[]string{"ps", "--prefix", "p.x", "--project", "../x"}, ExitUsage, "", nil},
		{[]string{"stop", "a", "b"}, ExitError, "", []string{"rm", "-f", "b"}},
		{[]string{"stop"}, ExitUsage, "", nil},
		{[]string{"state"}, ExitUsage, "", nil},
		{[]string{"wait", "a", "b"}, ExitUsage, "", nil},
		{[]string{"wait", "a", "--timeout", "-1"}, ExitUsage, "", nil},
		{[]string{"logs", "a", "--bogus"}, ExitUsage, "", nil},
		{[]string{"ps", "--prefix", ""}, ExitUsage, "", nil},
		{[]string{"ps", "extra"}, ExitUsage, "", nil},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			os.Remove(log)
			code, out, errOut := runAs(t, 0, c.args...)
			if code != c.code || (c.out != "" && out != c.out) {
				t.Fatalf("exit %d out %q err %q; want %d %q", code, out, errOut, c.code, c.out)
			}
			if c.podman != nil {
				cs := calls(t, log)
				if len(cs) == 0 || !reflect.DeepEqual(cs[len(cs)-1], c.podman) {
					t.Fatalf("podman calls %q, want last %q", cs, c.podman)
				}
			}
		})
	}
}

func TestStateUnknownAndFreePort(t *testing.T) {
	fakePodmanOnPath(t, `[ "$1" = container ] && { echo 'Error: database is locked' >&2; exit 125; }`)
	if code, _, errOut := runAs(t, 0, "state", "c1"); code != ExitError || !strings.Contains(errOut, "Error: podman container inspect c1: Error: database is locked") {
		t.Fatalf("%d %q", code, errOut)
	}
	code, out, _ := runAs(t, 0, "free-port", "--json")
	var res map[string]int
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res["port"] <= 0 {
		t.Fatalf("free-port %d %q", code, out)
	}
}

func TestDoctorExitCode(t *testing.T) {
	// Nothing listens on the configured ports of a fresh config dir? Use
	// ports that were just free.
	home := t.TempDir()
	cfgDir := filepath.Join(home, "cfg")
	os.MkdirAll(cfgDir, 0o755)
	os.WriteFile(filepath.Join(cfgDir, "config.toml"), []byte("proxy_port = 1\nssh_agent_port = 1\n"), 0o644)
	var out, errb bytes.Buffer
	vars := testkit.RootVars(home)
	vars["TEROK_SANDBOX_CONFIG_DIR"] = cfgDir
	env := testkit.Env(vars, 0, home)
	code := Run([]string{Program, "doctor"}, Deps{Stdout: &out, Stderr: &errb, Env: env})
	if code != 2 || !strings.Contains(out.String(), "  Credential proxy (TCP) .... ERROR (proxy unreachable at http://host.containers.internal:1/-/health") ||
		!strings.Contains(out.String(), "  Shield state .... ok (no desired state configured") {
		t.Fatalf("doctor %d\n%s%s", code, out.String(), errb.String())
	}
}

// Bad names are usage errors before anything touches the disk: no shield
// bundle outside the state dir, no nested task dirs.
func TestRunAndHelpersRefuseBadNames(t *testing.T) {
	home := t.TempDir()
	log := fakePodmanOnPath(t, "")
	vars := testkit.RootVars(home)
	vars["TEROK_SANDBOX_STATE_DIR"] = filepath.Join(home, "a", "b", "state")
	env := testkit.Env(vars, 0, home)
	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := Run(append([]string{Program}, args...), Deps{Stdout: &out, Stderr: &errb, Env: env})
		return code, errb.String()
	}
	for _, args := range [][]string{
		{"run", "--name", "../../x", "--image", "i"},
		{"run", "--name", "../../../../x", "--image", "i", "--shield-bypass"},
		{"run", "--name", "a/b", "--image", "i"},
		{"run", "--name", ".", "--image", "i"},
		{"run", "--name", "x y", "--image", "i"},
		{"stop", "ok", "../x"},
		{"logs", "a/b"},
		{"wait", ".."},
		{"state", ".x"},
	} {
		code, errOut := run(args...)
		if code != ExitUsage || !strings.Contains(errOut, "invalid container name") || !strings.Contains(errOut, "e.g.") {
			t.Errorf("%q: exit %d %q", args, code, errOut)
		}
	}
	if code, errOut := run("ps", "--prefix", "../p"); code != ExitUsage || !strings.Contains(errOut, "--prefix: invalid container name") {
		t.Errorf("ps: exit %d %q", code, errOut)
	}
	spec := filepath.Join(t.TempDir(), "spec.json")
	os.WriteFile(spec, []byte(`{"container_name":"../../y","image":"i"}`), 0o644)
	if code, errOut := run("run", "--spec", spec); code != ExitUsage || !strings.Contains(errOut, `invalid container name "../../y"`) {
		t.Errorf("spec: exit %d %q", code, errOut)
	}
	if len(calls(t, log)) != 0 {
		t.Fatalf("podman called: %q", calls(t, log))
	}
	entries, _ := os.ReadDir(home)
	for _, e := range entries {
		t.Errorf("written under the home: %s", e.Name())
	}
}

// stop removes each container and looks for its shield annotation first; a
// name with neither a container nor shield state is an error after the
// others are stopped.
func TestStopInspectsRemovesAndReportsMissing(t *testing.T) {
	log := fakePodmanOnPath(t, `[ "$1 $4" = "container a" ] && { echo '[{"Id":"1"}]'; exit 0; }`)
	cases := []struct {
		args      []string
		code      int
		out, errs string
		calls     string
	}{
		{[]string{"stop", "a", "--json"}, 0, "{\n  \"missing\": [],\n  \"stopped\": [\n    \"a\"\n  ]\n}\n", "", "container inspect -- a|rm -f a"},
		{[]string{"stop", "a"}, 0, "", "", "container inspect -- a|rm -f a"},
		{[]string{"stop", "missing"}, ExitError, "", "Error: no such container: missing\n", "container inspect -- missing|rm -f missing"},
		{[]string{"stop", "b", "a", "--json"}, ExitError, "{\n  \"missing\": [\n    \"b\"\n  ],\n  \"stopped\": [\n    \"a\"\n  ]\n}\n",
			"Error: no such container: b\n", "container inspect -- b|rm -f b|container inspect -- a|rm -f a"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			os.Remove(log)
			code, out, errOut := runAs(t, 0, c.args...)
			if code != c.code || out != c.out || errOut != c.errs {
				t.Fatalf("exit %d out %q err %q; want %d %q %q", code, out, errOut, c.code, c.out, c.errs)
			}
			var seen []string
			for _, cl := range calls(t, log) {
				seen = append(seen, strings.Join(cl, " "))
			}
			if strings.Join(seen, "|") != c.calls {
				t.Fatalf("calls %q, want %q", seen, c.calls)
			}
		})
	}
}

// The shield's live commands check their CONTAINER argument with the same
// rule.
func TestShieldLiveCommandsRefuseBadNames(t *testing.T) {
	fakePodmanOnPath(t, "")
	for _, args := range [][]string{{"shield", "up", "a/b"}, {"shield", "down", "../x"}, {"shield", "allow", "x y", "example.com"},
		{"shield", "deny", ".", "1.2.3.4"}, {"shield", "state", "a:b"}, {"shield", "rules", ".."}, {"shield", "log", "a/b"}} {
		if code, _, errOut := runAs(t, 0, args...); code != ExitUsage || !strings.Contains(errOut, "invalid container name") {
			t.Errorf("%q: exit %d %q", args, code, errOut)
		}
	}
}

// A container podman does not know is an error (exit 1) for every command
// that names one; logs passes its line selection to podman.
func TestMissingContainersAndLogFlags(t *testing.T) {
	log := fakePodmanOnPath(t, `case "$1 $*" in
"logs "*missing*) echo 'Error: no container with name or ID "missing" found: no such container' >&2; exit 125;;
"wait "*missing*) echo 'Error: no container with name or ID "missing" found: no such container' >&2; exit 125;;
"logs "*) echo line-1; echo line-2; exit 0;;
esac`)
	cases := []struct {
		args   []string
		code   int
		out    string
		errSub string
		podman []string
	}{
		{[]string{"logs", "c1", "--tail", "5", "--since", "10m"}, 0, "line-1\nline-2\n", "", []string{"logs", "--tail=5", "--since=10m", "--", "c1"}},
		{[]string{"logs", "-f", "c1"}, 0, "line-1\nline-2\n", "", []string{"logs", "-f", "--", "c1"}},
		{[]string{"logs", "c1", "--follow", "--tail=0"}, 0, "", "", []string{"logs", "-f", "--tail=0", "--", "c1"}},
		{[]string{"logs", "missing"}, ExitError, "", "Error: no such container: missing", []string{"container", "inspect", "--", "missing"}},
		{[]string{"logs", "c1", "--tail", "-2"}, ExitUsage, "", "--tail must be -1", nil},
		{[]string{"logs", "c1", "--since", " "}, ExitUsage, "", "--since must not be empty", nil},
		{[]string{"wait", "missing"}, ExitError, "", "Error: no such container: missing", []string{"container", "inspect", "--", "missing"}},
		{[]string{"state", "missing"}, ExitError, "", "Error: no such container: missing", nil},
		{[]string{"shield", "state", "missing"}, ExitError, "", "Error: no such container: missing", []string{"container", "inspect", "--", "missing"}},
		{[]string{"shield", "rules", "missing"}, ExitError, "", "Error: no such container: missing", []string{"container", "inspect", "--", "missing"}},
		{[]string{"shield", "state", "c1"}, 0, "inactive\n", "", []string{"container", "inspect", "--", "c1"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			os.Remove(log)
			code, out, errOut := runAs(t, 0, c.args...)
			if code != c.code || (c.out != "" && out != c.out) || !strings.Contains(errOut, c.errSub) {
				t.Fatalf("exit %d out %q err %q; want %d %q %q", code, out, errOut, c.code, c.out, c.errSub)
			}
			if c.podman != nil {
				cs := calls(t, log)
				if len(cs) == 0 || !reflect.DeepEqual(cs[len(cs)-1], c.podman) {
					t.Fatalf("podman calls %q, want last %q", cs, c.podman)
				}
			}
		})
	}
}

func TestRunShieldModeFlag(t *testing.T) {
	fakePodmanOnPath(t, "")
	code, _, errOut := runAs(t, 1000, "run", "--shield-mode", "permissive", "--name", "n", "--image", "i")
	if code != ExitUsage || !strings.Contains(errOut, "--shield-mode") || !strings.Contains(errOut, "unknown shield mode 'permissive'") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, _, errOut = runAs(t, 1000, "run", "--shield-bypass", "--shield-mode", "learn", "--name", "n", "--image", "i")
	if code == 0 || !strings.Contains(errOut, "shield_bypass is set") {
		t.Fatalf("learn under bypass: exit %d: %s", code, errOut)
	}
}
