package sandbox_test

import (
	"fmt"

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
