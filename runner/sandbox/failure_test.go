package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/taskend"
	"terok.dev/sandbox/runner/internal/firewall"
	"terok.dev/sandbox/runner/internal/launch"
)

// cleaningFirewall is a firewall with leftovers (firewall.Cleaner): its
// Cleanup calls go to the same log as the scripted podman's calls, so the
// tests see their order.
type cleaningFirewall struct {
	callLog string
	err     error
}

func (f cleaningFirewall) PreStart(_ context.Context, l firewall.Launch) ([]string, error) {
	return []string{"--annotation", launch.AnnStateDir + "=" + filepath.Join(l.TaskDir, "shield")}, nil
}

func (f cleaningFirewall) Cleanup(_ context.Context, container, taskDir string) error {
	fh, err := os.OpenFile(f.callLog, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	fh.WriteString("cleanup " + container + " " + taskDir + "\n")
	return f.err
}

// inspectJSON is what `podman container inspect` prints for a container
// created by `podman <args>` at created.
func inspectJSON(t *testing.T, args []string, created time.Time) string {
	t.Helper()
	data, err := json.Marshal([]map[string]any{{
		"Id": "4f2c9a", "Created": created, "State": map[string]any{"Status": "created"},
		"Config": map[string]any{"CreateCommand": append([]string{"/usr/bin/podman"}, args...),
			"Annotations": map[string]string{launch.AnnStateDir: launch.AnnotationIn(args, launch.AnnStateDir)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

const (
	runcNotFound = `Error: runc: runc create failed: unable to start container process: exec: "/no/such/binary": stat /no/such/binary: no such file or directory: OCI runtime attempted to invoke a command that was not found`
	hookFailed   = `Error: OCI runtime error: runc: runc create failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: terok-shield hook: bundle version 3 is not supported`
	nameInUse    = `Error: creating container storage: the container name "c" is already in use by 4f2c. You have to remove that container to be able to reuse that name: that name is already in use`
)

// TestRunFailedStart: a `podman run -d` that fails is followed by exactly
// the cleanup its outcome calls for, and the error says which step failed
// and what was cleaned up.
func TestRunFailedStart(t *testing.T) {
	cases := []struct {
		name       string
		runStderr  string
		inspect    string // shell body answering `container inspect`; "OURS" = our create command
		rm         string
		cleanErr   error
		wantCalls  []string
		wantErr    []string
		wantNotErr []string
	}{
		{
			name: "name clash: nothing touched", runStderr: nameInUse, inspect: "OURS",
			wantCalls: []string{"run"},
			wantErr:   []string{"Container launch failed: container creation failed.", "already in use", `a container named "c" already exists`},
		},
		{
			name: "created then the command failed: removed and cleaned", runStderr: runcNotFound, inspect: "OURS",
			wantCalls: []string{"run", "container inspect -- c", "rm -f -t 0 c", "cleanup c TASK"},
			wantErr: []string{"Container launch failed: starting the container's command failed.", "executable", "OCI runtime attempted to invoke a command that was not found",
				"The container c was removed; the name is free for the next launch.", `Hint: "/no/such/binary" could not be started in image "i"`},
		},
		{
			name: "the shield hook failed", runStderr: hookFailed, inspect: "OURS",
			wantCalls: []string{"run", "container inspect -- c", "rm -f -t 0 c", "cleanup c TASK"},
			wantErr:   []string{"Container launch failed: the shield hook failed.", "TASK/shield/hook-error.log", "The container c was removed"},
		},
		{
			name: "removal fails: the command to run", runStderr: runcNotFound, inspect: "OURS", rm: "echo 'Error: cannot remove container 4f2c: container state improper' >&2; exit 2",
			wantCalls:  []string{"run", "container inspect -- c", "rm -f -t 0 c", "cleanup c TASK"},
			wantErr:    []string{"Removing the container c FAILED (Error: cannot remove container 4f2c: container state improper): remove it now with `podman rm -f -t 0 c`."},
			wantNotErr: []string{"was removed"},
		},
		{
			name: "nothing was created", runStderr: "Error: localhost/i: image not known",
			inspect:   "echo '[]'; echo 'Error: inspecting object: no such container c' >&2; exit 125",
			wantCalls: []string{"run", "container inspect -- c", "cleanup c TASK"},
			wantErr:   []string{"Container launch failed: container creation failed.", "No container c was left behind; the name is free.", `Hint: image "i" is not in podman's local storage`},
		},
		{
			name: "a container of that name that is not ours", runStderr: runcNotFound,
			inspect:   `echo '[{"Id":"99","Created":"2030-01-01T00:00:00Z","Config":{"CreateCommand":["podman","run","-d","--name","c","other"]}}]'`,
			wantCalls: []string{"run", "container inspect -- c"},
			wantErr:   []string{"A container named c exists but was not created by this launch; it was left alone."},
		},
		{
			name: "podman cannot say", runStderr: runcNotFound, inspect: "echo 'Error: database is locked' >&2; exit 125",
			wantCalls: []string{"run", "container inspect -- c"},
			wantErr:   []string{"Could not check whether podman left a container c behind (podman container inspect c: Error: database is locked)", "`podman rm -f -t 0 c`"},
		},
		{
			name: "the firewall's cleanup fails", runStderr: runcNotFound, inspect: "OURS", cleanErr: errors.New("resolver 4242 did not exit"),
			wantCalls: []string{"run", "container inspect -- c", "rm -f -t 0 c", "cleanup c TASK"},
			wantErr:   []string{"The container c was removed", "Stopping the shield's processes of c FAILED (resolver 4242 did not exit): run `terok-sandbox stop c`."},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, env := coreTestConfig(t)
			dir := t.TempDir()
			taskDir := filepath.Join(dir, "task")
			callLog := filepath.Join(dir, "calls")
			fw := cleaningFirewall{callLog: callLog, err: c.cleanErr}
			spec := RunSpec{ContainerName: "c", Image: "i", TaskDir: taskDir, Command: []string{"/no/such/binary"}}
			s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}})
			args, err := s.command(context.Background(), spec, fw)
			if err != nil {
				t.Fatal(err)
			}
			inspect := c.inspect
			if inspect == "OURS" {
				js := filepath.Join(dir, "inspect.json")
				os.WriteFile(js, []byte(inspectJSON(t, args, time.Now())), 0o600)
				inspect = "cat " + js
			}
			rm := c.rm
			if rm == "" {
				rm = "exit 0"
			}
			errFile := filepath.Join(dir, "run.stderr")
			os.WriteFile(errFile, []byte(c.runStderr+"\n"), 0o600)
			bin := filepath.Join(dir, "podman")
			script := "#!/bin/sh\nif [ \"$1\" = run ]; then echo run >> " + callLog + "; else echo \"$*\" >> " + callLog + "; fi\n" +
				"case \"$1\" in\nrun) cat " + errFile + " >&2; exit 126;;\ncontainer) " + inspect + ";;\nrm) " + rm + ";;\nesac\n"
			os.WriteFile(bin, []byte(script), 0o755)
			s = New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
			post := false
			id, err := s.run(context.Background(), spec, LifecycleHooks{PostStart: func() error { post = true; return nil }}, fw)
			if err == nil || id != "" || post {
				t.Fatalf("id %q err %v post %v", id, err, post)
			}
			data, _ := os.ReadFile(callLog)
			got := strings.ReplaceAll(strings.TrimSpace(string(data)), taskDir, "TASK")
			if want := strings.Join(c.wantCalls, "\n"); got != want {
				t.Fatalf("calls\n%s\nwant\n%s", got, want)
			}
			msg := strings.ReplaceAll(err.Error(), taskDir, "TASK")
			for _, w := range c.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range c.wantNotErr {
				if strings.Contains(msg, w) {
					t.Errorf("error has %q:\n%s", w, msg)
				}
			}
			var le *LaunchError
			if !errors.As(err, &le) {
				t.Fatalf("not a *LaunchError: %T", err)
			}
		})
	}
}

// A podman killed because the caller gave up may have created the
// container already: it is still found and removed.
func TestRunCancelledStillCleansUp(t *testing.T) {
	cfg, env := coreTestConfig(t)
	dir := t.TempDir()
	taskDir := filepath.Join(dir, "task")
	callLog := filepath.Join(dir, "calls")
	fw := cleaningFirewall{callLog: callLog}
	spec := RunSpec{ContainerName: "c", Image: "i", TaskDir: taskDir}
	s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}})
	args, err := s.command(context.Background(), spec, fw)
	if err != nil {
		t.Fatal(err)
	}
	js := filepath.Join(dir, "inspect.json")
	os.WriteFile(js, []byte(inspectJSON(t, args, time.Now())), 0o600)
	bin := filepath.Join(dir, "podman")
	os.WriteFile(bin, []byte("#!/bin/sh\necho \"$1\" >> "+callLog+"\ncase \"$1\" in\nrun) exec sleep 30;;\ncontainer) cat "+js+";;\nesac\n"), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	s = New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
	_, err = s.run(ctx, spec, LifecycleHooks{}, fw)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "The container c was removed") {
		t.Fatalf("err %v", err)
	}
	data, _ := os.ReadFile(callLog)
	if got := strings.TrimSpace(strings.ReplaceAll(string(data), taskDir, "TASK")); got != "run\ncontainer\nrm\ncleanup c TASK" {
		t.Fatalf("calls %q", got)
	}
}

// A failed verification removes the container and then cleans up.
func TestRunUnverifiedCleansUp(t *testing.T) {
	cfg, env := coreTestConfig(t)
	dir := t.TempDir()
	callLog := filepath.Join(dir, "calls")
	bin := filepath.Join(dir, "podman")
	os.WriteFile(bin, []byte("#!/bin/sh\necho \"$1\" >> "+callLog+"\ncase \"$1\" in run) echo cid42;; esac\n"), 0o755)
	var verified []string
	fw := struct {
		verifyingFirewall
		cleaningFirewall
	}{verifyingFirewall{verifyErr: errors.New("no table"), verified: &verified}, cleaningFirewall{callLog: callLog}}
	s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
	_, err := s.run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: "/task"}, LifecycleHooks{}, fwWithVerify{fw})
	if err == nil || !strings.Contains(err.Error(), "the container was removed") {
		t.Fatalf("err %v", err)
	}
	if data, _ := os.ReadFile(callLog); string(data) != "run\nrm\ncleanup c /task\n" {
		t.Fatalf("calls %q", data)
	}
}

// fwWithVerify resolves the embedded firewalls' PreStart ambiguity.
type fwWithVerify struct {
	f struct {
		verifyingFirewall
		cleaningFirewall
	}
}

func (f fwWithVerify) PreStart(ctx context.Context, l firewall.Launch) ([]string, error) {
	return f.f.verifyingFirewall.PreStart(ctx, l)
}
func (f fwWithVerify) VerifyStarted(ctx context.Context, c, d, id string) error {
	return f.f.verifyingFirewall.VerifyStarted(ctx, c, d, id)
}
func (f fwWithVerify) Cleanup(ctx context.Context, c, d string) error {
	return f.f.cleaningFirewall.Cleanup(ctx, c, d)
}

// Invalid names are refused before the firewall pre-start can write
// anything.
func TestRunRefusesBadNamesFirst(t *testing.T) {
	cfg, env := coreTestConfig(t)
	dir := t.TempDir()
	callLog := filepath.Join(dir, "calls")
	for _, name := range []string{"../../x", "a/b", "-x", ".", "..", ".hidden", "a b", strings.Repeat("n", 129)} {
		s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: filepath.Join(dir, "no-podman")})
		_, err := s.run(context.Background(), RunSpec{ContainerName: name, Image: "i", TaskDir: filepath.Join(dir, "t")}, LifecycleHooks{}, cleaningFirewall{callLog: callLog})
		if err == nil || !strings.Contains(err.Error(), "run spec: invalid container name") {
			t.Errorf("%q: %v", name, err)
		}
		if _, err := DefaultTaskDir(cfg, name); err == nil {
			t.Errorf("DefaultTaskDir(%q) accepted", name)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("something was written: %v", entries)
	}
	if d, err := DefaultTaskDir(cfg, "ok-1"); err != nil || d != filepath.Join(cfg.StateDir, "tasks", "ok-1") {
		t.Fatalf("%q %v", d, err)
	}
}

// Stop removes, then cleans up in the annotated and the default task dir;
// a name that cannot be a container is skipped.
func TestStopCleansUp(t *testing.T) {
	cfg, env := coreTestConfig(t)
	dir := t.TempDir()
	callLog := filepath.Join(dir, "calls")
	bin := filepath.Join(dir, "podman")
	os.WriteFile(bin, []byte("#!/bin/sh\necho \"$*\" >> "+callLog+"\ncase \"$1 $4\" in\n"+
		"'container a') echo '[{\"Id\":\"1\",\"Config\":{\"Annotations\":{\"terok.shield.state_dir\":\"/custom/a/shield\"}}}]';;\n"+
		"'container b') echo '[]'; echo 'Error: inspecting object: no such container b' >&2; exit 125;;\n"+
		"esac\n"), 0o755)
	s := New(cfg, Options{Env: env, Stdout: &bytes.Buffer{}, Podman: bin})
	missing := s.stop(context.Background(), []string{"a", "../x", "b"}, cleaningFirewall{callLog: callLog, err: errors.New("ignored")})
	if strings.Join(missing, ",") != "../x,b" {
		t.Fatalf("missing %q, want ../x and b", missing)
	}
	data, _ := os.ReadFile(callLog)
	tasks := filepath.Join(cfg.StateDir, "tasks")
	want := "container inspect -- a\nrm -f a\ncleanup a /custom/a\ncleanup a " + tasks + "/a\n" +
		"container inspect -- b\nrm -f b\ncleanup b " + tasks + "/b\n"
	if string(data) != want {
		t.Fatalf("calls\n%s\nwant\n%s", data, want)
	}
	// Both ends are recorded, so tokens bound to a or b die
	// (docs/security-model.md, Tokens that die with their task); the bad
	// name writes nothing.
	w := taskend.NewWatcher(cfg.TaskEndsDir(), nil)
	for _, name := range []string{"a", "b"} {
		if e, gone := w.Gone(name, time.Now().Add(-time.Minute)); !gone || e.Reason != taskend.ReasonStopped {
			t.Errorf("end of %s: %+v %v", name, e, gone)
		}
	}
	if e, _ := w.Gone("a", time.Now().Add(-time.Minute)); e.ID != "1" {
		t.Errorf("end of a has id %q, want podman's 1", e.ID)
	}
	if ents, _ := os.ReadDir(cfg.TaskEndsDir()); len(ents) != 3 { // a, b and the lock
		t.Errorf("task-ends holds %v", ents)
	}
	// Shield state left in b's task directory is something to remove: b
	// is not missing then.
	if err := os.MkdirAll(filepath.Join(tasks, "b", "shield"), 0o700); err != nil {
		t.Fatal(err)
	}
	if missing := s.stop(context.Background(), []string{"b"}, cleaningFirewall{callLog: callLog}); len(missing) != 0 {
		t.Fatalf("b with leftovers reported missing")
	}
}

// Token operations of the Go API check the ids before they open the
// credentials database.
func TestTokenAPIsRefuseBadIDsFirst(t *testing.T) {
	cfg, env := coreTestConfig(t)
	s := New(cfg, Options{Env: env})
	ctx := context.Background()
	for _, c := range [][2]string{{"../p", "t"}, {"p", "a/b"}, {"", "t"}, {"p", "-t"}} {
		if _, err := s.CreatePhantomToken(ctx, PhantomTokenSpec{Project: c[0], Task: c[1], Provider: "claude"}); err == nil || !strings.Contains(err.Error(), "create phantom token: invalid") {
			t.Errorf("CreatePhantomToken(%q, %q): %v", c[0], c[1], err)
		}
		if _, err := s.SSHAgentEnv(ctx, TaskRef{Project: c[0], Task: c[1]}); err == nil || !strings.Contains(err.Error(), "create SSH agent token: invalid") {
			t.Errorf("SSHAgentEnv(%q, %q): %v", c[0], c[1], err)
		}
		if _, err := s.CreateToken(TaskRef{Project: c[0], Task: c[1]}); err == nil || !strings.Contains(err.Error(), "create gate token: invalid") {
			t.Errorf("CreateToken(%q, %q): %v", c[0], c[1], err)
		}
	}
	if _, err := os.Stat(cfg.CredentialsDB()); !os.IsNotExist(err) {
		t.Fatalf("the credentials database was touched: %v", err)
	}
	if _, err := os.Stat(cfg.GateTokenFile()); !os.IsNotExist(err) {
		t.Fatalf("the gate tokens file was touched: %v", err)
	}
}
