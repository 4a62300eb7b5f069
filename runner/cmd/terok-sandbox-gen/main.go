//go:build !urfave_cli_no_docs

// Command terok-sandbox-gen writes, at build time, the man page, shell
// completions, systemd units and example configuration of an installation
// (docs/install.md). It is a build tool: it is not installed.
package main

import (
	"flag"
	"fmt"
	"os"

	"terok.dev/sandbox/runner/internal/installfiles"
)

func main() {
	fs := flag.NewFlagSet("terok-sandbox-gen", flag.ContinueOnError)
	out := fs.String("out", "", "output directory (required)")
	bin := fs.String("bindir", "/usr/bin", "absolute directory the installed units run the daemons from")
	built := fs.String("built", "", "directory of the built daemons whose -h output becomes their man pages (none without it)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: terok-sandbox-gen -out DIR [-bindir DIR] [-built DIR]")
		os.Exit(2)
	}
	if err := installfiles.Write(*out, installfiles.Options{BinDir: *bin, BuiltDir: *built}); err != nil {
		fmt.Fprintln(os.Stderr, "terok-sandbox-gen:", err)
		os.Exit(1)
	}
}
