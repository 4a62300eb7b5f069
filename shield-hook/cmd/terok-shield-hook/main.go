// Command terok-shield-hook is the shield's OCI hook (createRuntime and
// poststop, docs/shield-hook.md) and, as `terok-shield-hook resolver
// --state-dir=DIR`, the per-container resolver the createRuntime hook
// starts (docs/shield-resolver.md), and, as `terok-shield-hook
// apply-ruleset --mode=MODE`, the runner's way of applying a table over
// netlink in a container's netns (docs/shield.md, Interactive mode: the
// queue rule).
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
	if len(os.Args) > 1 && os.Args[1] == shieldbundle.ApplySubcommand {
		os.Exit(hook.ApplyMain(context.Background(), os.Args, os.Stdin, os.Stderr))
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
