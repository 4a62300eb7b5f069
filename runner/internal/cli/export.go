package cli

import ucli "github.com/urfave/cli/v2"

// NewApp returns the command tree for the build-time generator of man
// pages and completions (cmd/terok-sandbox-gen, docs/install.md): the same
// definitions Run executes, so the generated files cannot drift from the
// binary. Commands are not run through it.
func NewApp(d Deps) *ucli.App { return newApp(d) }
