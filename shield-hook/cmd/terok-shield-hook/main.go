// Command terok-shield-hook is the shield's OCI hook (createRuntime and
// poststop). See docs/shield-hook.md.
package main

import (
	"context"
	"os"

	"terok.dev/sandbox/shield-hook/internal/hook"
)

func main() {
	os.Exit(hook.Main(context.Background(), hook.Options{
		Args:   os.Args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
		Setenv: os.Setenv,
	}))
}
