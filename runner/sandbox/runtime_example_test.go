package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/config"

	"terok.dev/sandbox/runner/sandbox"
)

// A command line is printed with its secrets hidden.
func ExampleRedactEnvArgs() {
	argv := []string{"run", "-e", "GH_TOKEN=ghp_secret", "--env=LANG=C", "img"}
	fmt.Println(sandbox.RedactEnvArgs(argv))
	fmt.Println(len(sandbox.GPURunArgs(false)), sandbox.GPURunArgs(true)[:2])
	// Output:
	// [run -e GH_TOKEN=<redacted> --env=LANG=C img]
	// 0 [--device nvidia.com/gpu=all]
}

// The user-namespace and bypass arguments depend on who runs podman; as
// root there is no user namespace and bypass uses slirp4netns's
// host-loopback wiring.
func ExampleSandbox_BypassNetworkArgs() {
	dir, err := os.MkdirTemp("", "sandbox-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	env := config.Env{EUID: 0, Home: dir, Getenv: func(k string) string {
		if strings.HasPrefix(k, "TEROK_SANDBOX_") && strings.HasSuffix(k, "_DIR") {
			return filepath.Join(dir, k)
		}
		return ""
	}}
	sb := sandbox.New(config.Defaults(env), sandbox.Options{Env: env})
	fmt.Println(len(sb.UsernsArgs()))
	fmt.Println(sb.BypassNetworkArgs(context.Background()))
	env.EUID = 1000
	fmt.Println(sandbox.New(config.Defaults(env), sandbox.Options{Env: env}).UsernsArgs())
	// Output:
	// 0
	// [--network slirp4netns:allow_host_loopback=true --add-host host.containers.internal:10.0.2.2]
	// [--userns=keep-id:uid=1000,gid=1000]
}
