package shield_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/shield"
)

// How an orchestrator tells the shield's failures apart: a launch that
// needs the global hooks installed, a container that is gone, a container
// that was never shielded.
func Example_errors() {
	explain := func(err error) string {
		var setup *shield.SetupNeededError
		var gone *shield.ContainerNotRunningError
		var bare *shield.NotShieldedError
		switch {
		case errors.As(err, &setup):
			return "run Shield.Setup, then launch again"
		case errors.As(err, &gone):
			return gone.Container + " is not running"
		case errors.As(err, &bare):
			return bare.Container + " has no firewall to change"
		}
		return "other: " + err.Error()
	}
	fmt.Println(explain(fmt.Errorf("launch: %w", &shield.SetupNeededError{PodmanVersion: "4.3.1"})))
	fmt.Println(explain(&shield.ContainerNotRunningError{Container: "p-t1"}))
	fmt.Println(explain(&shield.NotShieldedError{Container: "p-t2"}))
	// Output:
	// run Shield.Setup, then launch again
	// p-t1 is not running
	// p-t2 has no firewall to change
}

// The configuration summary needs no podman; under shield_bypass the live
// operations are no-ops and report success.
func ExampleShield_Status() {
	dir, err := os.MkdirTemp("", "shield-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	env := config.Env{EUID: 1000, Home: dir, Getenv: func(k string) string {
		if k == "TEROK_SANDBOX_STATE_DIR" || k == "TEROK_SANDBOX_CONFIG_DIR" || k == "TEROK_SANDBOX_RUNTIME_DIR" {
			return filepath.Join(dir, k)
		}
		return ""
	}}
	cfg := config.Defaults(env)
	cfg.ShieldBypass = true
	sh := shield.New(cfg, shield.Options{Env: env})
	st := sh.Status()
	fmt.Println(st.Mode, st.Bypass)
	fmt.Println(sh.Up(context.Background(), shield.Container{Name: "p-t1"}))
	// Output:
	// hook true
	// <nil>
}
