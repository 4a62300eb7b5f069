// Command terok-shield-hook is the shield's OCI hook (createRuntime and
// poststop, docs/shield-hook.md) and, as `terok-shield-hook resolver
// --state-dir=DIR`, the per-container resolver the createRuntime hook
// starts (docs/shield-resolver.md).
package main

import (
	"context"
	"os"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/hook"
	"terok.dev/sandbox/shield-hook/internal/resolver"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == shieldbundle.ResolverSubcommand {
		os.Exit(resolver.Main(context.Background(), os.Args, os.Stderr))
	}
	os.Exit(hook.Main(context.Background(), hook.Options{
		Args:   os.Args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
		Setenv: os.Setenv,
	}))
}
