package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode"

	ucli "github.com/urfave/cli/v2"

	"terok.dev/sandbox/common/creddb"
)

// maxSecretInput bounds what `credentials set` reads.
const maxSecretInput = 1 << 20

// credentialsCommand is `terok-sandbox credentials ...`: the stored
// credentials the proxy injects (on-disk-formats.md §3). Secrets are read
// from stdin or a file, never from the command line (argv is visible to
// every local user), and `get` prints them only with --show-secret.
func credentialsCommand(d Deps) *ucli.Command {
	setFlag := &ucli.StringFlag{Name: "set", Value: creddb.DefaultSet, Usage: "credential set"}
	return &ucli.Command{
		Name:  "credentials",
		Usage: "stored credentials the proxy injects: set, get, list, delete",
		Subcommands: []*ucli.Command{
			{
				Name:      "set",
				Usage:     "store a credential read from stdin or --from-file (a JSON object, or a bare secret with --type)",
				ArgsUsage: "PROVIDER",
				Description: "Input is either a JSON object stored as is (e.g. {\"type\": \"oauth\", \"access_token\": ..., " +
					"\"refresh_token\": ..., \"expires_at\": ...}) or a single-line secret, stored as " +
					"{\"type\": TYPE, \"key\"|\"access_token\"|\"token\": SECRET} (api_key → key, oauth → access_token, others → token).",
				Flags: []ucli.Flag{setFlag,
					&ucli.StringFlag{Name: "type", Value: "api_key", Usage: "type of a bare secret: api_key, oauth, pat, oauth_token, ..."},
					&ucli.StringFlag{Name: "from-file", Usage: "read the secret from this file instead of stdin"},
					jsonFlag(),
				},
				Action: func(c *ucli.Context) error {
					fa, err := parseArgs(c)
					if err != nil {
						return err
					}
					if len(fa.pos) > 1 {
						return UsageErrorf("unexpected argument after PROVIDER; secrets are never taken from the command line: pipe them on stdin or use --from-file")
					}
					fa, a, err := argsExactly(c, "provider")
					if err != nil {
						return err
					}
					input, err := readSecretInput(fa, d)
					if err != nil {
						return err
					}
					data, err := credentialFromInput(input, fa.String("type"))
					if err != nil {
						return err
					}
					db, err := openCredDB(c, d)
					if err != nil {
						return err
					}
					defer db.Close()
					if err := db.StoreCredential(c.Context, fa.String("set"), a[0], data); err != nil {
						return err
					}
					if fa.Bool("json") {
						return writeJSON(d.Stdout, map[string]string{"provider": a[0], "credential_set": fa.String("set"), "type": typeOf(data)})
					}
					fmt.Fprintf(d.Stdout, "Stored credential %s in set %s (type %s).\n", a[0], fa.String("set"), typeOf(data))
					return nil
				},
			},
			{
				Name:      "get",
				Usage:     "show a stored credential (secrets masked unless --show-secret)",
				ArgsUsage: "PROVIDER",
				Flags:     []ucli.Flag{setFlag, &ucli.BoolFlag{Name: "show-secret", Usage: "print the secret values (they end up in your terminal history)"}, jsonFlag()},
				Action: withCredDB(d, []string{"provider"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					cred, err := db.LoadCredential(c.Context, fa.String("set"), a[0])
					if errors.Is(err, creddb.ErrNotFound) {
						return fmt.Errorf("no credential %s in set %s; store one with 'terok-sandbox credentials set %s'", a[0], fa.String("set"), a[0])
					}
					if err != nil {
						return err
					}
					if !fa.Bool("show-secret") {
						cred = maskCredential(cred)
					}
					if fa.Bool("json") {
						return writeJSON(d.Stdout, cred)
					}
					keys := make([]string, 0, len(cred))
					for k := range cred {
						keys = append(keys, k)
					}
					sort.Strings(keys)
					fmt.Fprintf(d.Stdout, "Provider: %s\nSet:      %s\n", a[0], fa.String("set"))
					for _, k := range keys {
						v := cred[k]
						s, ok := v.(string)
						if !ok {
							b, _ := json.Marshal(v)
							s = string(b)
						}
						fmt.Fprintf(d.Stdout, "  %s: %s\n", k, s)
					}
					return nil
				}),
			},
			{
				Name:  "list",
				Usage: "list the providers with a stored credential",
				Flags: []ucli.Flag{setFlag, jsonFlag()},
				Action: withCredDB(d, nil, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					names, err := db.ListCredentials(c.Context, fa.String("set"))
					if err != nil {
						return err
					}
					if fa.Bool("json") {
						return writeJSON(d.Stdout, names)
					}
					if len(names) == 0 {
						fmt.Fprintf(d.Stdout, "No credentials stored in set %s.\n", fa.String("set"))
						return nil
					}
					for _, n := range names {
						fmt.Fprintln(d.Stdout, n)
					}
					return nil
				}),
			},
			{
				Name:      "delete",
				Usage:     "delete a stored credential (no error if absent)",
				ArgsUsage: "PROVIDER",
				Flags:     []ucli.Flag{setFlag},
				Action: withCredDB(d, []string{"provider"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					if err := db.DeleteCredential(c.Context, fa.String("set"), a[0]); err != nil {
						return err
					}
					fmt.Fprintf(d.Stdout, "Deleted credential %s from set %s.\n", a[0], fa.String("set"))
					return nil
				}),
			},
		},
	}
}

// readSecretInput reads the secret from --from-file or stdin, bounded.
func readSecretInput(fa *cmdArgs, d Deps) ([]byte, error) {
	var r io.Reader = d.Stdin
	src := "stdin"
	if p := fa.String("from-file"); p != "" {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open secret file: %w", err)
		}
		defer f.Close()
		r, src = f, p
	} else if f, ok := d.Stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintln(d.Stderr, "Paste the secret, then press Enter and Ctrl-D:")
		}
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecretInput+1))
	if err != nil {
		return nil, fmt.Errorf("read secret from %s: %w", src, err)
	}
	if len(b) > maxSecretInput {
		return nil, fmt.Errorf("secret input from %s is larger than 1 MiB", src)
	}
	return b, nil
}

// credentialFromInput turns the input into the data column: a JSON object
// as is, or a bare single-line secret under the member its type uses.
func credentialFromInput(in []byte, typ string) (creddb.Credential, error) {
	t := bytes.TrimSpace(in)
	if len(t) == 0 {
		return nil, errors.New("no secret given: pipe it on stdin or use --from-file")
	}
	if t[0] == '{' {
		c, err := creddb.DecodeCredential(t)
		if err != nil {
			return nil, fmt.Errorf("credential input: %w", err)
		}
		return c, nil
	}
	s := string(t)
	if strings.ContainsFunc(s, unicode.IsControl) || strings.ContainsAny(s, " \t") {
		return nil, errors.New("the secret contains whitespace or control characters; give a single-line secret or a JSON object")
	}
	if typ == "" {
		return nil, UsageErrorf("--type must not be empty")
	}
	member := "token"
	switch typ {
	case "api_key":
		member = "key"
	case "oauth":
		member = "access_token"
	}
	return creddb.Credential{"type": typ, member: s}, nil
}

func typeOf(c creddb.Credential) string {
	if t, ok := c["type"].(string); ok && t != "" {
		return t
	}
	if _, ok := c["access_token"]; ok {
		return "oauth (legacy row)"
	}
	return "unknown"
}

// secretMember reports whether a credential member holds a secret.
func secretMember(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"token", "key", "secret", "password"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// maskCredential replaces secret members with a length hint.
func maskCredential(c creddb.Credential) creddb.Credential {
	out := make(creddb.Credential, len(c))
	for k, v := range c {
		if s, ok := v.(string); ok && secretMember(k) && s != "" {
			out[k] = fmt.Sprintf("<hidden, %d chars>", len(s))
			continue
		}
		out[k] = v
	}
	return out
}
