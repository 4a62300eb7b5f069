package daemons_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/testkit"
	"terok.dev/sandbox/runner/daemons"
)

// exampleEnv is a user with a home and state of their own, so the
// examples never read or touch the real user's units and daemons.
func exampleEnv() (config.Env, func()) {
	dir, err := os.MkdirTemp("", "daemons-example-")
	if err != nil {
		panic(err)
	}
	vars := testkit.RootVars(dir)
	vars["XDG_CONFIG_HOME"] = filepath.Join(dir, "home", ".config")
	env := testkit.Env(vars, 1000, filepath.Join(dir, "home"))
	return env, func() { os.RemoveAll(dir) }
}

// An orchestrator checks the gate before it creates a task: Ensure never
// starts it, and its error says what the operator should run.
func ExampleGate_Ensure() {
	env, cleanup := exampleEnv()
	defer cleanup()
	cfg := config.Defaults(env)
	gate := daemons.NewGate(cfg, daemons.Options{Env: env})

	st := gate.Status(context.Background())
	fmt.Println(st.Mode, st.Running, st.Port == cfg.GatePort)

	err := gate.Ensure(context.Background())
	var msg daemons.Message
	fmt.Println(errors.As(err, &msg), strings.SplitN(err.Error(), "\n", 2)[0])
	fmt.Printf("%q\n", gate.UnitsOutdated())
	// Output:
	// none false true
	// true Gate server is not running.
	// ""
}

// The proxy's status says where its files are and what it serves; with
// nothing installed or started it is in mode none and not healthy.
func ExampleProxy_Status() {
	env, cleanup := exampleEnv()
	defer cleanup()
	cfg := config.Defaults(env)
	proxy := daemons.NewProxy(cfg, daemons.Options{Env: env})

	st := proxy.Status(context.Background())
	fmt.Println(st.Mode, st.Running, st.Healthy, st.RoutesConfigured, len(st.CredentialsStored))
	fmt.Println(proxy.Stop())
	// Output:
	// none false false 0 0
	// false
}
