package launch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"terok.dev/sandbox/runner/internal/podman"
)

func TestArgsOrder(t *testing.T) {
	fw := []string{"--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2"}
	full := Params{
		Rootless: true, FirewallArgs: fw, GPU: true,
		ExtraArgs: []string{"-p", "8080:80", "--stop-timeout=1"},
		Volumes:   []string{"/h/a:/c/a", "/h/b:/c/b:ro,z"},
		Env:       []EnvVar{{"B", "2"}, {"A", "x=y"}},
		Labels:    RunnerLabels("1.2.3", "proj", "t1"),
		Name:      "proj-1", Image: "img:tag", Command: []string{"sh", "-c", "echo hi"},
	}
	cases := []struct {
		name string
		p    Params
		want []string
	}{
		{"everything, rootless", full, []string{
			"run", "-d",
			"--userns=keep-id:uid=1000,gid=1000",
			"--security-opt", "no-new-privileges",
			"--network", "slirp4netns:allow_host_loopback=true", "--add-host", "host.containers.internal:10.0.2.2",
			"--device", "nvidia.com/gpu=all", "-e", "NVIDIA_VISIBLE_DEVICES=all", "-e", "NVIDIA_DRIVER_CAPABILITIES=all",
			"-p", "8080:80", "--stop-timeout=1",
			"-v", "/h/a:/c/a", "-v", "/h/b:/c/b:ro,z",
			"-e", "B=2", "-e", "A=x=y",
			"--label", "dev.terok.sandbox.runner-version=1.2.3", "--label", "dev.terok.sandbox.project=proj", "--label", "dev.terok.sandbox.task=t1",
			"--name", "proj-1", "-w", "/workspace", "img:tag", "sh", "-c", "echo hi",
		}},
		{"root, minimal, restricted", Params{Name: "n", Image: "i"}, []string{
			"run", "-d", "--security-opt", "no-new-privileges", "--name", "n", "-w", "/workspace", "i",
		}},
		{"unrestricted drops no-new-privileges", Params{Unrestricted: true, Name: "n", Image: "i", Command: []string{"true"}}, []string{
			"run", "-d", "--name", "n", "-w", "/workspace", "i", "true",
		}},
		{"labels without project and task", Params{Name: "n", Image: "i", Labels: RunnerLabels("v", "", "")}, []string{
			"run", "-d", "--security-opt", "no-new-privileges", "--label", "dev.terok.sandbox.runner-version=v", "--name", "n", "-w", "/workspace", "i",
		}},
		{"empty env value kept", Params{Name: "n", Image: "i", Env: []EnvVar{{"E", ""}}}, []string{
			"run", "-d", "--security-opt", "no-new-privileges", "-e", "E=", "--name", "n", "-w", "/workspace", "i",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Args(c.p); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("args\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Params{Name: "n", Image: "i"}
	cases := []struct {
		name string
		mod  func(*Params)
		want string
	}{
		{"ok", func(*Params) {}, ""},
		{"no name", func(p *Params) { p.Name = "" }, "name is required"},
		{"no image", func(p *Params) { p.Image = "" }, "image is required"},
		{"flag-like name", func(p *Params) { p.Name = "--privileged" }, "must not start"},
		{"flag-like image", func(p *Params) { p.Image = "--privileged" }, "must not start"},
		{"empty env name", func(p *Params) { p.Env = []EnvVar{{"", "v"}} }, "empty"},
		{"env name with =", func(p *Params) { p.Env = []EnvVar{{"A=B", "v"}} }, "contains '='"},
		{"flag-like volume", func(p *Params) { p.Volumes = []string{"--privileged"} }, "volume"},
		{"NUL in command", func(p *Params) { p.Command = []string{"a\x00b"} }, "NUL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := ok
			c.mod(&p)
			err := p.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	cases := []struct {
		name     string
		in, want []string
	}{
		{"-e pair", []string{"-e", "API_TOKEN=secret"}, []string{"-e", "API_TOKEN=<redacted>"}},
		{"--env pair", []string{"--env", "MY_KEY=v"}, []string{"--env", "MY_KEY=<redacted>"}},
		{"-e= form", []string{"-e=db_password=hunter2"}, []string{"-e=db_password=<redacted>"}},
		{"--env= form", []string{"--env=PRIVATE_THING=x"}, []string{"--env=PRIVATE_THING=<redacted>"}},
		{"CODE_REPO", []string{"-e", "CODE_REPO=http://tok@host:9418/repo"}, []string{"-e", "CODE_REPO=<redacted>"}},
		{"CLONE_FROM", []string{"-e", "CLONE_FROM=http://tok@h/r"}, []string{"-e", "CLONE_FROM=<redacted>"}},
		{"CODE_REPO exact only", []string{"-e", "CODE_REPOSITORY=x"}, []string{"-e", "CODE_REPOSITORY=x"}},
		{"lowercase secret word", []string{"-e", "my_secret_sauce=x"}, []string{"-e", "my_secret_sauce=<redacted>"}},
		{"api inside word", []string{"-e", "OPENAPI_URL=x"}, []string{"-e", "OPENAPI_URL=<redacted>"}},
		{"plain names unchanged", []string{"-e", "TASK_ID=abc123", "-e", "PATH=/usr/bin"}, []string{"-e", "TASK_ID=abc123", "-e", "PATH=/usr/bin"}},
		{"value with = kept after name", []string{"-e", "TOKEN=a=b"}, []string{"-e", "TOKEN=<redacted>"}},
		{"no = is left", []string{"-e", "TOKEN"}, []string{"-e", "TOKEN"}},
		{"dangling -e", []string{"run", "-e"}, []string{"run", "-e"}},
		{"other args untouched", []string{"-v", "API_KEY=x:/y", "--name", "SECRET=1", "-eAPI_KEY=x"}, []string{"-v", "API_KEY=x:/y", "--name", "SECRET=1", "-eAPI_KEY=x"}},
		{"value of -e not reinterpreted", []string{"-e", "-e", "KEY=1"}, []string{"-e", "-e", "KEY=1"}},
		{"URL user info in any variable", []string{"-e", "GATE_URL=http://terok-g-1234abcd@host.containers.internal:9418/proj.git"},
			[]string{"-e", "GATE_URL=http://<redacted>@host.containers.internal:9418/proj.git"}},
		{"URL user and password", []string{"-e", "UPSTREAM=https://u:p%40ss@h"}, []string{"-e", "UPSTREAM=https://<redacted>@h"}},
		{"URL in a command argument", []string{"sh", "-c", "git clone http://tok@h/r.git x && curl https://a:b@h2?q=1"},
			[]string{"sh", "-c", "git clone http://<redacted>@h/r.git x && curl https://<redacted>@h2?q=1"}},
		{"@ after the authority kept", []string{"-e", "U=http://h/p@v", "ssh://git@h:22/r", "a@b"}, []string{"-e", "U=http://h/p@v", "ssh://<redacted>@h:22/r", "a@b"}},
		{"scheme without authority", []string{"-e", "X=://", "-e", "Y=http://"}, []string{"-e", "X=://", "-e", "Y=http://"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]string(nil), c.in...)
			got := Redact(c.in)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %q want %q", got, c.want)
			}
			if !reflect.DeepEqual(c.in, in) {
				t.Fatal("Redact modified its input")
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	got := CommandLine("podman", []string{"run", "-d", "-e", "API_TOKEN=s3cret", "-e", "MSG=it's here", "--name", "n", "img", "sh", "-c", "echo $HOME"})
	want := `podman run -d -e 'API_TOKEN=<redacted>' -e 'MSG=it'"'"'s here' --name n img sh -c 'echo $HOME'`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if strings.Contains(got, "s3cret") {
		t.Fatal("secret printed")
	}
	if Quote("") != "''" || Quote("a/b:c=d,e@f%g+h.i_j-k") != "a/b:c=d,e@f%g+h.i_j-k" {
		t.Fatal("quote of empty or safe string")
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name     string
		res      podman.Result
		err      error
		gpu      bool
		contains []string
	}{
		{"cdi spec", podman.Result{Stderr: []byte("Error: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all\n"), Code: 126}, errors.New("exit"), true,
			[]string{"Container launch failed (GPU misconfiguration):\nError: setting up CDI devices: unresolvable CDI devices nvidia.com/gpu=all\n\nHint: NVIDIA CDI", "podman-desktop.io/docs/podman/gpu"}},
		{"cdi.k8s.io", podman.Result{Stderr: []byte("  failed: cdi.k8s.io/x  "), Code: 125}, errors.New("exit"), true, []string{"GPU misconfiguration):\nfailed: cdi.k8s.io/x\n\n"}},
		{"lowercase cdi is not GPU", podman.Result{Stderr: []byte("cdi thing"), Code: 125}, errors.New("exit"), false, []string{"Container launch failed:\ncdi thing"}},
		{"empty stderr", podman.Result{Code: 125}, errors.New("exit status 125"), false, []string{"Container launch failed:\npodman run exited with status 125"}},
		{"name clash", podman.Result{Stderr: []byte(`Error: creating container storage: the container name "c1" is already in use by abc. You have to remove that container to be able to reuse that name: that name is already in use`), Code: 125}, errors.New("exit"), false,
			[]string{`the container name "c1" is already in use`, "terok-sandbox stop c1"}},
		{"missing image", podman.Result{Stderr: []byte("Error: initializing source docker://localhost/nope:latest: connection refused"), Code: 125}, errors.New("exit"), false,
			[]string{"initializing source docker://localhost/nope:latest", `image "img" is not in podman's local storage`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Classify(c.res, c.err, "c1", "img")
			var ge *GPUError
			if errors.As(err, &ge) != c.gpu {
				t.Fatalf("GPU error = %v, want %v (%v)", !c.gpu, c.gpu, err)
			}
			if c.gpu && ge.Hint != GPUHint {
				t.Fatalf("hint %q", ge.Hint)
			}
			for _, s := range c.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
	if err := Classify(podman.Result{}, podman.ErrNotFound, "c", "i"); err.Error() != "podman not found; please install podman" {
		t.Fatalf("not found: %v", err)
	}
}

// fakePodman writes an executable script standing in for podman.
func fakePodman(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "podman")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecute(t *testing.T) {
	ctx := context.Background()
	argsFile := filepath.Join(t.TempDir(), "args")
	ok := fakePodman(t, `printf '%s\n' "$@" > `+argsFile+`; echo 0123abcd`)
	id, err := Execute(ctx, podman.Podman{Bin: ok}, []string{"run", "-d", "--name", "n", "i"}, "n", "i")
	if err != nil || id != "0123abcd" {
		t.Fatalf("id %q err %v", id, err)
	}
	if data, _ := os.ReadFile(argsFile); string(data) != "run\n-d\n--name\nn\ni\n" {
		t.Fatalf("argv %q", data)
	}

	gpu := fakePodman(t, `echo 'Error: unresolvable CDI devices nvidia.com/gpu=all' >&2; exit 126`)
	_, err = Execute(ctx, podman.Podman{Bin: gpu}, []string{"run"}, "n", "i")
	var ge *GPUError
	if !errors.As(err, &ge) {
		t.Fatalf("want GPU error, got %v", err)
	}

	_, err = Execute(ctx, podman.Podman{Bin: filepath.Join(t.TempDir(), "no-podman")}, []string{"run"}, "n", "i")
	if !errors.Is(err, podman.ErrNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	_, err = Execute(ctx, podman.Podman{}, []string{"run"}, "n", "i")
	if err == nil || err.Error() != "podman not found; please install podman" {
		t.Fatalf("want not found via PATH, got %v", err)
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("API_TOKEN", "secret", 0)
	f.Add("CODE_REPO", "http://t@h/r", 1)
	f.Add("PATH", "/usr/bin", 2)
	f.Add("db_Password", "x=y", 3)
	f.Add("GATE_URL", "http://terok-g-1@h:1/p.git", 0)
	f.Add("U", "http://a@b@c/d http://e@f", 2)
	f.Fuzz(func(t *testing.T, name, value string, form int) {
		if strings.Contains(name, "=") || strings.Contains(name, "://") {
			return
		}
		var argv, redacted []string
		switch form & 3 {
		case 0:
			argv = []string{"run", "-e", name + "=" + value, "img"}
			redacted = []string{"run", "-e", name + "=" + Redacted, "img"}
		case 1:
			argv = []string{"run", "--env", name + "=" + value, "img"}
			redacted = []string{"run", "--env", name + "=" + Redacted, "img"}
		case 2:
			argv = []string{"run", "-e=" + name + "=" + value, "img"}
			redacted = []string{"run", "-e=" + name + "=" + Redacted, "img"}
		default:
			argv = []string{"run", "--env=" + name + "=" + value, "img"}
			redacted = []string{"run", "--env=" + name + "=" + Redacted, "img"}
		}
		got := Redact(argv)
		// Element by element: a sensitive value is replaced entirely, anything
		// else passes through with only its URLs' user information replaced.
		want := make([]string, len(argv))
		for i, a := range argv {
			want[i] = redactUserinfo(a)
		}
		if SensitiveName(name) {
			want = redacted
		}
		if u, _, _ := strings.Cut(value, "@"); strings.HasPrefix(value, "http://") && len(u) > len("http://") &&
			!strings.ContainsAny(u[len("http://"):], "/?# \t\n'\"") && u != "http://"+Redacted && strings.Contains(strings.Join(got, " "), u+"@") {
			t.Fatalf("Redact(%q) = %q keeps the URL's user information", argv, got)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Redact(%q) = %q, want %q", argv, got, want)
		}
		_ = CommandLine("podman", got)
	})
}
