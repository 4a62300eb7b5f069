package sandbox

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"terok.dev/sandbox/common/version"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/gatetokens"
	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/seccomp"
)

func coreTestConfig(t *testing.T) (config.Config, config.Env) {
	t.Helper()
	dir := t.TempDir()
	env := config.Env{EUID: 0, Home: dir, Getenv: func(k string) string {
		switch k {
		case "TEROK_SANDBOX_STATE_DIR":
			return filepath.Join(dir, "state")
		case "XDG_STATE_HOME":
			return filepath.Join(dir, "xdg-state")
		}
		return ""
	}}
	cfg := config.Defaults(env)
	// EUID 0 would put the credentials under /var/lib/terok and the
	// runtime files under /run: keep every path of the test its own.
	cfg.CredentialsDir = filepath.Join(dir, "credentials")
	cfg.RuntimeDir = filepath.Join(dir, "run")
	// The launch refuses to run without the seccomp profile: install one
	// (generated from a minimal podman-shaped profile) in a config root of
	// the test's own.
	cfg.ConfigDir = filepath.Join(dir, "config")
	prof, err := seccomp.Transform([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seccomp.Path(cfg.ConfigDir), prof, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, env
}

// coreFakePodman records argv lines of `run` calls in <dir>/run and answers
// `info` like a rootless slirp4netns host.
func coreFakePodman(t *testing.T, runBody string) (bin, runLog string) {
	t.Helper()
	dir := t.TempDir()
	runLog = filepath.Join(dir, "run")
	script := "#!/bin/sh\ncase \"$1\" in\n" +
		"info) echo '{\"host\":{\"rootlessNetworkCmd\":\"slirp4netns\"}}';;\n" +
		"run) printf '%s\\n' \"$@\" > " + runLog + "; " + runBody + ";;\nesac\n"
	bin = filepath.Join(dir, "podman")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, runLog
}

func TestGateURL(t *testing.T) {
	cfg, _ := coreTestConfig(t)
	base := cfg.GateBasePath()
	tok := "terok-g-0123456789abcdef0123456789abcdef"
	cases := []struct {
		name, repo, token, want, err string
	}{
		{"top level", filepath.Join(base, "myproj.git"), tok, "http://" + tok + "@host.containers.internal:9418/myproj.git", ""},
		{"nested", filepath.Join(base, "org", "p.git"), tok, "http://" + tok + "@host.containers.internal:9418/org/p.git", ""},
		{"unclean inside", base + "/x/../p.git", tok, "http://" + tok + "@host.containers.internal:9418/p.git", ""},
		{"outside", "/tmp/p.git", tok, "", "not inside the gate base path"},
		{"escape", base + "/../p.git", tok, "", "not inside"},
		{"base itself", base, tok, "", "not inside"},
		{"sibling prefix", base + "-other/p.git", tok, "", "not inside"},
		{"token with @", filepath.Join(base, "p.git"), "a@b", "", "not a valid gate token"},
		{"empty token", filepath.Join(base, "p.git"), "", "", "not a valid gate token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := GateURL(cfg, c.repo, GateToken(c.token))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %q, %v; want error %q", got, err, c.err)
				}
				if strings.Contains(err.Error(), "a@b") {
					t.Fatal("raw token in error")
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
	cfg.GatePort = 12345
	if got, _ := New(cfg, Options{}).GateURL(filepath.Join(base, "p.git"), GateToken(tok)); got != "http://"+tok+"@host.containers.internal:12345/p.git" {
		t.Fatalf("port: %q", got)
	}
}

func TestCreateTokenProjectThenTask(t *testing.T) {
	cfg, env := coreTestConfig(t)
	tok, err := New(cfg, Options{Env: env}).CreateToken(TaskRef{Project: "proj-a", Task: "task-7"})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := gatetokens.NewStore(cfg, nil).Lookup(string(tok))
	if !ok || e.Project != "proj-a" || e.Task != "task-7" {
		t.Fatalf("stored %+v (found %v)", e, ok)
	}
	tok2, err := CreateToken(cfg, TaskRef{Project: "proj-b", Task: "t"})
	if err != nil || tok2 == tok {
		t.Fatalf("%q %v", tok2, err)
	}
	if _, err := CreateToken(cfg, TaskRef{Project: "bad project!", Task: "t"}); err == nil {
		t.Fatal("invalid project accepted")
	}
	if n, err := New(cfg, Options{Env: env}).RevokeToken(TaskRef{Project: "proj-a", Task: "task-7"}); err != nil || n != 1 {
		t.Fatalf("RevokeToken = %d, %v", n, err)
	}
	if _, ok := gatetokens.NewStore(cfg, nil).Lookup(string(tok)); ok {
		t.Fatal("revoked token still found")
	}
	if _, ok := gatetokens.NewStore(cfg, nil).Lookup(string(tok2)); !ok {
		t.Fatal("another task's token revoked too")
	}
	if n, err := RevokeToken(cfg, TaskRef{Project: "proj-a", Task: "task-7"}); err != nil || n != 0 {
		t.Fatalf("second RevokeToken = %d, %v", n, err)
	}
	if _, err := RevokeToken(cfg, TaskRef{Project: "p", Task: "a/b"}); err == nil {
		t.Fatal("RevokeToken accepted an invalid task id")
	}
}

func coreBypassSandbox(t *testing.T, euid int, runBody string) (*Sandbox, *bytes.Buffer, string) {
	cfg, env := coreTestConfig(t)
	env.EUID = euid
	cfg.ShieldBypass = true
	bin, runLog := coreFakePodman(t, runBody)
	var out bytes.Buffer
	return New(cfg, Options{Env: env, Stdout: &out, Podman: bin}), &out, runLog
}

func TestRunRestrictedByDefaultAndHooks(t *testing.T) {
	s, out, runLog := coreBypassSandbox(t, 1000, "echo abc123")
	var trace []string
	hooks := LifecycleHooks{
		PreStart: func() error {
			if _, err := os.Stat(runLog); err == nil {
				t.Error("pre-start fired after podman")
			}
			if !strings.Contains(out.String(), "$ podman run") {
				t.Error("pre-start fired before the command was printed")
			}
			trace = append(trace, "pre")
			return nil
		},
		PostStart: func() error { trace = append(trace, "post"); return nil },
		PostReady: func() error { t.Error("post-ready fired by Run"); return nil },
		PostStop:  func() error { t.Error("post-stop fired by Run"); return nil },
	}
	id, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: "/t",
		Env: []EnvVar{{"Z", "1"}, {"SECRET_X", "hide"}}}, hooks)
	if err != nil || id != "abc123" {
		t.Fatalf("%q %v", id, err)
	}
	if strings.Join(trace, ",") != "pre,post" {
		t.Fatalf("hooks %v", trace)
	}
	argv, _ := os.ReadFile(runLog)
	want := "run\n-d\n--userns=keep-id:uid=1000,gid=1000\n--security-opt\nno-new-privileges\n--security-opt\nseccomp=" + seccomp.Path(s.Config().ConfigDir) + "\n--network\nslirp4netns:allow_host_loopback=true\n" +
		"--add-host\nhost.containers.internal:10.0.2.2\n-e\nZ=1\n-e\nSECRET_X=hide\n--label\ndev.terok.sandbox.runner-version=" + version.Version + "\n--name\nc\n-w\n/workspace\ni\n"
	if string(argv) != want {
		t.Fatalf("argv\n%s\nwant\n%s", argv, want)
	}
	if strings.Contains(out.String(), "hide") || !strings.Contains(out.String(), "'SECRET_X=<redacted>'") {
		t.Fatalf("printed %q", out.String())
	}
}

func TestRunPreStartErrorAborts(t *testing.T) {
	s, _, runLog := coreBypassSandbox(t, 0, "echo id")
	post := false
	_, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: "/t"}, LifecycleHooks{
		PreStart:  func() error { return errors.New("no workspace") },
		PostStart: func() error { post = true; return nil },
	})
	if err == nil || !strings.Contains(err.Error(), "no workspace") || post {
		t.Fatalf("err %v post %v", err, post)
	}
	if _, err := os.Stat(runLog); err == nil {
		t.Fatal("podman ran although pre-start failed")
	}
}

func TestRunErrors(t *testing.T) {
	s, _, _ := coreBypassSandbox(t, 0, "echo 'Error: unresolvable CDI devices nvidia.com/gpu=all' >&2; exit 126")
	post := false
	_, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: "/t", GPUEnabled: true},
		LifecycleHooks{PostStart: func() error { post = true; return nil }})
	var ge *GpuConfigError
	if !errors.As(err, &ge) || ge.Hint != GPUHint || post {
		t.Fatalf("err %v post %v", err, post)
	}

	s, _, _ = coreBypassSandbox(t, 0, "echo id")
	if _, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i"}, LifecycleHooks{}); err == nil || !strings.Contains(err.Error(), "task dir is required") {
		t.Fatalf("missing task dir: %v", err)
	}
	if _, err := s.Run(context.Background(), RunSpec{Image: "i", TaskDir: "/t"}, LifecycleHooks{}); err == nil {
		t.Fatal("missing name accepted")
	}

	cfg, env := coreTestConfig(t)
	cfg.ShieldBypass = true
	_, err = New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: filepath.Join(t.TempDir(), "none")}).Run(context.Background(),
		RunSpec{ContainerName: "c", Image: "i", TaskDir: "/t"}, LifecycleHooks{})
	if !errors.Is(err, ErrPodmanNotFound) {
		t.Fatalf("missing podman: %v", err)
	}
}

// Without bypass, Run never starts podman unless the firewall supplied its
// arguments; a profile that does not exist must fail the launch.
func TestRunWithoutBypassFailsClosed(t *testing.T) {
	cfg, env := coreTestConfig(t)
	cfg.ShieldProfiles = []string{"no-such-profile-unit"}
	bin, runLog := coreFakePodman(t, "echo id")
	var out bytes.Buffer
	_, err := New(cfg, Options{Env: env, Stdout: &out, Podman: bin}).Run(context.Background(),
		RunSpec{ContainerName: "c", Image: "i", TaskDir: t.TempDir()}, LifecycleHooks{})
	if err == nil || !strings.Contains(err.Error(), "shield pre-start for c") {
		t.Fatalf("err %v", err)
	}
	if _, statErr := os.Stat(runLog); statErr == nil {
		t.Fatal("podman run executed without firewall")
	}
	if strings.Contains(out.String(), "BYPASSED") {
		t.Fatal("bypass warning without bypass")
	}
}

// verifyingFirewall is a firewall whose post-start verification outcome
// the test chooses.
type verifyingFirewall struct {
	verifyErr error
	verified  *[]string
}

func (f verifyingFirewall) PreStart(context.Context, firewall.Launch) ([]string, error) {
	return []string{"--annotation", "fw=1"}, nil
}

func (f verifyingFirewall) VerifyStarted(_ context.Context, container, taskDir, id string) error {
	*f.verified = append(*f.verified, container+"|"+taskDir+"|"+id)
	return f.verifyErr
}

// earlyFirewall is a verifyingFirewall whose check begins before podman
// runs (firewall.EarlyVerifier); Finish reports like VerifyStarted.
type earlyFirewall struct {
	verifyingFirewall
	events *[]string
}

type earlyCheck struct {
	f         earlyFirewall
	container string
	taskDir   string
}

func (f earlyFirewall) BeginVerify(_ context.Context, container, taskDir string) firewall.Verification {
	*f.events = append(*f.events, "begin")
	return earlyCheck{f: f, container: container, taskDir: taskDir}
}

func (c earlyCheck) Finish(ctx context.Context, id string) error {
	*c.f.events = append(*c.f.events, "finish")
	return c.f.VerifyStarted(ctx, c.container, c.taskDir, id)
}

func (c earlyCheck) Stop() { *c.f.events = append(*c.f.events, "stop") }

// TestRunEarlyVerifier: the check begins before podman, ends with Finish
// on success and only Stop when podman failed.
func TestRunEarlyVerifier(t *testing.T) {
	for _, tt := range []struct {
		name       string
		podmanExit string
		wantEvents string
		wantErr    bool
	}{
		{"podman succeeded", "0", "begin finish stop", false},
		{"podman failed", "1", "begin stop", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, env := coreTestConfig(t)
			dir := t.TempDir()
			bin := filepath.Join(dir, "podman")
			os.WriteFile(bin, []byte("#!/bin/sh\ncase \"$1\" in run) echo cid42; exit "+tt.podmanExit+";; esac\n"), 0o755)
			var verified, events []string
			s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
			_, err := s.run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: "/task"}, LifecycleHooks{},
				earlyFirewall{verifyingFirewall{verified: &verified}, &events})
			if (err != nil) != tt.wantErr {
				t.Fatalf("run: %v", err)
			}
			if got := strings.Join(events, " "); got != tt.wantEvents {
				t.Fatalf("events %q, want %q", got, tt.wantEvents)
			}
		})
	}
}

func TestRunVerifierSeam(t *testing.T) {
	cases := []struct {
		name      string
		verifyErr error
		rmFails   bool
		wantErr   []string
		wantRm    bool
		wantPost  bool
	}{
		{"verified", nil, false, nil, false, true},
		{"verification fails → removed", errors.New("no nft table in the container netns"), false,
			[]string{"shield verification failed for c: no nft table in the container netns; the container was removed", "terok-sandbox shield check"}, true, false},
		{"removal fails too", errors.New("hook did not run"), true,
			[]string{"shield verification failed for c: hook did not run", "removing the container FAILED", "podman rm -f -t 0 c"}, true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, env := coreTestConfig(t)
			dir := t.TempDir()
			callLog := filepath.Join(dir, "calls")
			rm := "exit 0"
			if c.rmFails {
				rm = "echo 'Error: cannot remove' >&2; exit 2"
			}
			bin := filepath.Join(dir, "podman")
			os.WriteFile(bin, []byte("#!/bin/sh\necho \"$*\" >> "+callLog+"\ncase \"$1\" in run) echo cid42;; rm) "+rm+";; esac\n"), 0o755)
			var verified []string
			post := false
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
			id, err := s.run(ctx, RunSpec{ContainerName: "c", Image: "i", TaskDir: "/task"},
				LifecycleHooks{PostStart: func() error { post = true; return nil }},
				verifyingFirewall{verifyErr: c.verifyErr, verified: &verified})
			if len(verified) != 1 || verified[0] != "c|/task|cid42" {
				t.Fatalf("VerifyStarted calls %q", verified)
			}
			data, _ := os.ReadFile(callLog)
			calls := strings.Split(strings.TrimSpace(string(data)), "\n")
			if !strings.Contains(calls[0], "--annotation fw=1") {
				t.Fatalf("firewall args not used: %q", calls[0])
			}
			if got := len(calls) == 2 && calls[1] == "rm -f -t 0 c"; got != c.wantRm {
				t.Fatalf("podman calls %q (want rm: %v)", calls, c.wantRm)
			}
			if post != c.wantPost {
				t.Fatalf("post_start fired = %v", post)
			}
			if c.wantErr == nil {
				if err != nil || id != "cid42" {
					t.Fatalf("%q %v", id, err)
				}
				return
			}
			if err == nil || id != "" {
				t.Fatalf("want error, got id %q", id)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// Bypass never claims to verify anything.
func TestBypassIsNotAVerifier(t *testing.T) {
	var fw firewall.Firewall = firewall.Bypass{}
	if _, ok := fw.(firewall.Verifier); ok {
		t.Fatal("bypass implements Verifier")
	}
}
