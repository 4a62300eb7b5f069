package cli

// What the token commands of the gate, the proxy and the SSH agent share:
// the --ttl and --container flags, and how a created or revoked token is
// shown.

import (
	"fmt"
	"time"

	ucli "github.com/urfave/cli/v2"
)

// tokenTTLFlag and tokenContainerFlag are the --ttl and --container of
// every token create command.
func tokenTTLFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "ttl", Usage: "the token stops working after this long (e.g. 8h, 90m; at most 8784h); default: until revoked"}
}

func tokenContainerFlag() ucli.Flag {
	return &ucli.StringFlag{Name: "container", Usage: "bind the token to this container: it stops working when the container is stopped or exits (e.g. --container myproj-42)"}
}

// tokenExpiry reads --ttl: when a new token stops working, the zero time
// (until revoked) without the flag; a bad value is a usage error.
func tokenExpiry(fa *cmdArgs) (time.Time, error) {
	v := fa.String("ttl")
	if v == "" {
		return time.Time{}, nil
	}
	ttl, err := ParseTTL(v)
	if err != nil {
		return time.Time{}, UsageErrorf("--ttl: %v", err)
	}
	return time.Now().Add(ttl).Truncate(time.Second).UTC(), nil
}

// printToken shows a created token: with --json one object, out with the
// token and, when set, its expiry and container; else the token alone on
// stdout and its expiry on stderr.
func printToken(d Deps, fa *cmdArgs, tok string, expires time.Time, container string, out map[string]any) error {
	if fa.Bool("json") {
		out["token"] = tok
		if !expires.IsZero() {
			out["expires"] = expires.Format(time.RFC3339)
		}
		if container != "" {
			out["container"] = container
		}
		return writeJSON(d.Stdout, out)
	}
	if !expires.IsZero() {
		fmt.Fprintf(d.Stderr, "The token expires at %s.\n", expires.Format(time.RFC3339))
	}
	fmt.Fprintln(d.Stdout, tok)
	return nil
}

// printRevoked shows what a token revoke command did: with --json the
// count and the task, else "Revoked N <line> of PROJECT/TASK." when there
// were any. None is an error ("no <kind> of PROJECT/TASK").
func printRevoked(d Deps, asJSON bool, n int64, project, task, line, kind string) error {
	if asJSON {
		if err := writeJSON(d.Stdout, map[string]any{"revoked": n, "project": project, "task": task}); err != nil {
			return err
		}
	} else if n > 0 {
		fmt.Fprintf(d.Stdout, "Revoked %d %s of %s/%s.\n", n, line, project, task)
	}
	if n == 0 {
		return fmt.Errorf("no %s of %s/%s", kind, project, task)
	}
	return nil
}
