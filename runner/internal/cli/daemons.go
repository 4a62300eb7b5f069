package cli

// The skeleton the gate's and the proxy's lifecycle commands share
// (docs/gate.md, Operating it; docs/credential-proxy.md, Operating it).

import (
	"fmt"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/daemons"
)

// daemonAction is the action of a lifecycle command: refuse positional
// arguments, build the daemon's lifecycle (runner/daemons; NewGate or
// NewProxy) over the loaded configuration, run fn, and when it succeeds
// print the line it returns ("" when fn has printed what it shows).
func daemonAction[L any](d Deps, lifecycle func(config.Config, daemons.Options) L,
	fn func(c *ucli.Context, cfg config.Config, l L) (string, error)) ucli.ActionFunc {
	return func(c *ucli.Context) error {
		if err := noArgs(c); err != nil {
			return err
		}
		cfg, err := loadConfig(c, d)
		if err != nil {
			return err
		}
		done, err := fn(c, cfg, lifecycle(cfg, daemons.Options{Env: d.Env, Log: d.Log}))
		if err != nil {
			return err
		}
		if done != "" {
			fmt.Fprintln(d.Stdout, done)
		}
		return nil
	}
}
