package cli

// Output and construction helpers every command uses: the --json flag and
// the one JSON printer, the facade, the debug log and podman.

import (
	"encoding/json"
	"io"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/podman"
	"terok.dev/sandbox/runner/internal/rundebug"
	"terok.dev/sandbox/runner/sandbox"
)

func jsonFlag() ucli.Flag { return &ucli.BoolFlag{Name: "json", Usage: "print machine-readable JSON"} }

// writeJSON prints v as indented JSON with a final newline: the one JSON
// printer of every --json output.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newSandbox builds the facade for a command; out receives the command line
// and warnings.
func newSandbox(cfg config.Config, d Deps, out io.Writer) *sandbox.Sandbox {
	return sandbox.New(cfg, sandbox.Options{Env: d.Env, Log: d.Log, Stdout: out})
}

func debugLog(d Deps) *rundebug.Log { return rundebug.New(d.Env.RunnerDebugLog()) }

func podmanFor(d Deps) podman.Podman { return podman.Podman{Debug: debugLog(d)} }
