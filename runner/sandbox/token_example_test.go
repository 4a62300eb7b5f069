package sandbox_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/sandbox"
)

// A task gets a gate token (its clone URL) and a phantom token for one
// provider; when the task ends, its phantom tokens are revoked.
func ExampleSandbox_CreatePhantomToken() {
	root, err := os.MkdirTemp("", "sandbox-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(root)
	cfg := config.Config{StateDir: filepath.Join(root, "state"), CredentialsDir: filepath.Join(root, "credentials"), GatePort: 9418}
	sb := sandbox.New(cfg, sandbox.Options{Env: config.Env{Getenv: func(string) string { return "" }, Home: root, EUID: os.Geteuid()}})
	ctx := context.Background()

	task := sandbox.TaskRef{Project: "demo", Task: "t1"}
	gateTok, err := sb.CreateToken(task)
	if err != nil {
		fmt.Println(err)
		return
	}
	url, err := sb.GateURL(filepath.Join(cfg.GateBasePath(), "demo.git"), gateTok)
	fmt.Println(len(url) > 0, err)

	_, err = sb.CreatePhantomToken(ctx, sandbox.PhantomTokenSpec{Project: task.Project, Task: task.Task, Provider: "claude"})
	fmt.Println("phantom token:", err)
	n, err := sb.RevokePhantomTokens(ctx, task)
	fmt.Println("revoked:", n, err)
	g, err := sb.RevokeToken(task)
	fmt.Println("gate tokens revoked:", g, err)
	// Output:
	// true <nil>
	// phantom token: <nil>
	// revoked: 1 <nil>
	// gate tokens revoked: 1 <nil>
}
