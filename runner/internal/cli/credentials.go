package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/secretstore"
	"terok.dev/sandbox/runner/internal/secretsctl"
)

// maxSecretInput bounds what `credentials set` reads.
const maxSecretInput = 1 << 20

// credentialsCommand is `terok-sandbox credentials ...`: the stored
// credentials the proxy injects (docs/formats.md, Credentials database). Secrets are read
// from stdin or a file, never from the command line (argv is visible to
// every local user), and `get` prints them only with --show-secret.
func credentialsCommand(d Deps) *ucli.Command {
	setFlag := &ucli.StringFlag{Name: "set", Value: creddb.DefaultSet, Usage: "credential set"}
	return &ucli.Command{
		Name:  "credentials",
		Usage: "stored credentials the proxy injects: set, get, list, delete; encryption at rest: status, unlock, lock, migrate, rotate-key",
		Subcommands: append([]*ucli.Command{
			{
				Name:      "set",
				Usage:     "store a credential read from stdin or --from-file (a JSON object, or a bare secret with --type)",
				ArgsUsage: "PROVIDER",
				Description: "Input is either a JSON object stored as is (e.g. {\"type\": \"oauth\", \"access_token\": ..., " +
					"\"refresh_token\": ..., \"expires_at\": ...}) or a single-line secret, stored as " +
					"{\"type\": TYPE, \"key\"|\"access_token\"|\"token\": SECRET} (api_key → key, oauth → access_token, others → token).",
				Flags: []ucli.Flag{setFlag,
					&ucli.StringFlag{Name: "type", Value: "api_key", Usage: "type of a bare secret: " + strings.Join(credentialTypeNames(), ", ")},
					&ucli.StringFlag{Name: "from-file", Usage: "read the secret from this file instead of stdin"},
					jsonFlag(),
				},
				Action: func(c *ucli.Context) error {
					fa := parseArgs(c)
					if len(fa.pos) > 1 {
						return UsageErrorf("unexpected argument after PROVIDER; secrets are never taken from the command line: pipe them on stdin or use --from-file")
					}
					fa, a, err := argsExactly(c, "provider")
					if err != nil {
						return err
					}
					// Checked before the secret is asked for, so a typo does
					// not cost a paste.
					if _, ok := credentialTypes()[fa.String("type")]; !ok {
						return UsageErrorf("--type %q is not one of %s", fa.String("type"), strings.Join(credentialTypeNames(), ", "))
					}
					input, err := readSecretInput(fa, d)
					if err != nil {
						return err
					}
					data, err := credentialFromInput(input, fa.String("type"))
					if err != nil {
						return err
					}
					if err := prepareSecretWrite(c, d); err != nil {
						return err
					}
					db, err := openCredDB(c, d)
					if err != nil {
						return err
					}
					defer db.Close()
					if err := db.StoreCredential(c.Context, creddb.CredentialKey{Set: fa.String("set"), Provider: a[0]}, data); err != nil {
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
					useVault(db)
					cred, err := db.LoadCredential(c.Context, creddb.CredentialKey{Set: fa.String("set"), Provider: a[0]})
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
				Usage:     "delete a stored credential (an error if there is none)",
				ArgsUsage: "PROVIDER",
				Flags:     []ucli.Flag{setFlag},
				Action: withCredDB(d, []string{"provider"}, func(c *ucli.Context, fa *cmdArgs, a []string, db *creddb.DB) error {
					stored, err := db.ListCredentials(c.Context, fa.String("set"))
					if err != nil {
						return err
					}
					if !slices.Contains(stored, a[0]) {
						return fmt.Errorf("no credential %s in set %s", a[0], fa.String("set"))
					}
					if err := db.DeleteCredential(c.Context, creddb.CredentialKey{Set: fa.String("set"), Provider: a[0]}); err != nil {
						return err
					}
					fmt.Fprintf(d.Stdout, "Deleted credential %s from set %s.\n", a[0], fa.String("set"))
					return nil
				}),
			},
		}, secretsCommands(d)...),
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
	member, ok := credentialTypes()[typ]
	if !ok {
		return nil, UsageErrorf("--type %q is not one of %s", typ, strings.Join(credentialTypeNames(), ", "))
	}
	return creddb.Credential{"type": typ, member: s}, nil
}

// credentialTypes maps each type a bare secret may have to the member the
// proxy reads it from (docs/credential-proxy.md): oauth → access_token
// (sent as a bearer token), api_key → key, the token types → token.
func credentialTypes() map[string]string {
	return map[string]string{"api_key": "key", "oauth": "access_token", "pat": "token", "oauth_token": "token", "token": "token"}
}

func credentialTypeNames() []string {
	names := make([]string, 0, len(credentialTypes()))
	for n := range credentialTypes() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
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

// prepareSecretWrite is run by every command that stores a secret (a
// credential, a generated or imported SSH key) before it writes: with
// encryption on and no keystore it creates one unattended and seals what is
// already stored (secretsctl.EnsureEncrypted), or warns, once for the
// command, that the secret goes to disk in plaintext and what to run. The
// messages go to stderr, so --json output stays clean.
func prepareSecretWrite(c *ucli.Context, d Deps) error {
	cfg, err := loadConfig(c, d)
	if err != nil {
		return err
	}
	setup, err := secretsctl.FromConfig(cfg).EnsureEncrypted(c.Context)
	if err != nil {
		return err
	}
	if setup.Plaintext {
		fmt.Fprintln(d.Stderr, setup.Warning)
	}
	if setup.Created {
		fmt.Fprintf(d.Stderr, "Encryption at rest is on: created the keystore %s, its key sealed by systemd-creds (%s), no passphrase needed on this host. "+
			"Add a recovery passphrase with 'terok-sandbox credentials rotate-key --new-passphrase'.\n",
			filepath.Join(cfg.CredentialsDir, secretstore.FileName), setup.Mode)
		if m := setup.Migrated; m.Credentials+m.KeyFiles > 0 {
			fmt.Fprintf(d.Stderr, "Encrypted the %d credentials and %d SSH key files already stored.\n", m.Credentials, m.KeyFiles)
		}
		if !setup.Migrated.WALClean {
			fmt.Fprintln(d.Stderr, "Warning: another process held the database open, so its write-ahead log may still hold old values; stop the proxy and run 'terok-sandbox credentials migrate'.")
		}
	}
	return nil
}

// useVault is db's vault: the keystore beside the database, which
// creddb.Open attached.
func useVault(db *creddb.DB) *secretstore.Vault { return db.Vault() }

// maxPassphrase bounds a passphrase file.
const maxPassphrase = 4096

// secretsCommands are the encryption-at-rest commands of `credentials`
// (docs/secrets-at-rest.md).
func secretsCommands(d Deps) []*ucli.Command {
	passFlag := &ucli.StringFlag{Name: "passphrase-file", Usage: "read the passphrase from this file (first line) instead of the terminal"}
	// withStore is their action skeleton: no positional arguments, the
	// store of the loaded configuration, then fn.
	withStore := func(fn func(c *ucli.Context, fa *cmdArgs, s secretsctl.Store) error) ucli.ActionFunc {
		return func(c *ucli.Context) error {
			fa, _, err := argsExactly(c)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(c, d)
			if err != nil {
				return err
			}
			return fn(c, fa, secretsctl.FromConfig(cfg))
		}
	}
	return []*ucli.Command{
		{
			Name:  "status",
			Usage: "show whether secrets are encrypted at rest, why, the key sources and what is still plaintext",
			Flags: []ucli.Flag{jsonFlag()},
			Action: withStore(func(c *ucli.Context, fa *cmdArgs, s secretsctl.Store) error {
				st, err := s.Status(c.Context)
				if err != nil {
					return err
				}
				if fa.Bool("json") {
					return writeJSON(d.Stdout, st)
				}
				fmt.Fprintf(d.Stdout, "Mode:        %s (%s)\n", st.Mode, st.Why)
				fmt.Fprintf(d.Stdout, "Keystore:    %s: %s\n", st.Keystore, st.State)
				if st.StateError != "" {
					fmt.Fprintf(d.Stdout, "             %s\n", st.StateError)
				}
				fmt.Fprintf(d.Stdout, "Credentials: %d sealed, %d plaintext\n", st.Credentials.Sealed, st.Credentials.Plaintext)
				fmt.Fprintf(d.Stdout, "Key files:   %d sealed, %d plaintext", st.KeyFiles.Sealed, st.KeyFiles.Plaintext)
				if st.KeyFiles.Missing > 0 {
					fmt.Fprintf(d.Stdout, ", %d missing", st.KeyFiles.Missing)
				}
				fmt.Fprintln(d.Stdout)
				fmt.Fprintln(d.Stdout, "Key sources:")
				for _, src := range st.Sources {
					fmt.Fprintf(d.Stdout, "  %-15s %s\n", src.Name, src.Detail)
				}
				if len(st.Next) > 0 {
					fmt.Fprintln(d.Stdout, "Next:")
					for _, n := range st.Next {
						fmt.Fprintf(d.Stdout, "  %s\n", n)
					}
				}
				return nil
			}),
		},
		{
			Name:  "unlock",
			Usage: "unlock the encrypted store for this user until lock or reboot (the first unlock chooses the passphrase and creates the keystore)",
			Flags: []ucli.Flag{passFlag,
				&ucli.StringFlag{Name: "timeout", Usage: "lock again after this long (e.g. 8h); default: until lock or reboot"},
				&ucli.StringFlag{Name: "systemd-creds", Usage: "also seal the key with systemd-creds (host, tpm2, host+tpm2 or auto) so later unlocks and the daemons need no passphrase; off removes that"}},
			Action: withStore(func(c *ucli.Context, fa *cmdArgs, s secretsctl.Store) error {
				var timeout time.Duration
				if t := fa.String("timeout"); t != "" {
					var err error
					if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 {
						return UsageErrorf("--timeout %q is not a positive duration (e.g. 30m, 8h)", t)
					}
				}
				_, statErr := os.Stat(filepath.Join(s.Dir, secretstore.FileName))
				creating := errors.Is(statErr, os.ErrNotExist)
				enroll := fa.String("systemd-creds")
				if mode := secretstore.OpenVault(s.Dir).SystemdCredsMode(); mode != "" && fa.String("passphrase-file") == "" && enroll == "" {
					_, err := s.UnlockWith(nil, secretsctl.UnlockOptions{Timeout: timeout})
					if err == nil {
						fmt.Fprintf(d.Stdout, "Unlocked with systemd-creds (%s): the key is cached in your kernel keyring until 'terok-sandbox credentials lock'%s.\n",
							mode, map[bool]string{true: " or " + timeout.String(), false: " or reboot"}[timeout > 0])
						return nil
					}
					fmt.Fprintf(d.Stderr, "systemd-creds could not open the key (%v); falling back to the passphrase.\n", err)
				}
				pass, err := readPassphrase(d, fa.String("passphrase-file"), creating && s.Encrypt)
				if err != nil {
					return err
				}
				defer clear(pass)
				created, err := s.UnlockWith(pass, secretsctl.UnlockOptions{Timeout: timeout, KDF: secretstore.DefaultKDF, SystemdCreds: enroll})
				if err != nil {
					return err
				}
				switch enroll {
				case "":
				case "off":
					fmt.Fprintln(d.Stdout, "Removed the systemd-creds enrollment: unlocking needs the passphrase again.")
				default:
					fmt.Fprintf(d.Stdout, "Sealed the key with systemd-creds (%s): later unlocks and the daemons need no passphrase on this host.\n", enroll)
				}
				if created {
					fmt.Fprintf(d.Stdout, "Created the keystore %s; new credentials and SSH keys are now stored encrypted.\n", filepath.Join(s.Dir, secretstore.FileName))
					fmt.Fprintln(d.Stdout, "Keep the passphrase: without it the encrypted values cannot be recovered.")
				}
				fmt.Fprintln(d.Stdout, "Unlocked: the key is cached in your kernel keyring until 'terok-sandbox credentials lock'"+
					map[bool]string{true: " or " + timeout.String(), false: " or reboot"}[timeout > 0]+".")
				if st, err := s.Status(c.Context); err == nil && st.Credentials.Plaintext+st.KeyFiles.Plaintext > 0 {
					fmt.Fprintf(d.Stdout, "%d values are still plaintext: run 'terok-sandbox credentials migrate'.\n", st.Credentials.Plaintext+st.KeyFiles.Plaintext)
				}
				return nil
			}),
		},
		{
			Name:  "lock",
			Usage: "drop the cached key; running daemons keep theirs in memory until they stop",
			Action: withStore(func(c *ucli.Context, _ *cmdArgs, s secretsctl.Store) error {
				dropped, err := s.Lock()
				if err != nil {
					return err
				}
				if mode := secretstore.OpenVault(s.Dir).SystemdCredsMode(); mode != "" {
					// Locking drops the cache only; the enrollment still opens it.
					defer fmt.Fprintf(d.Stdout, "Note: the key is also sealed by systemd-creds (%s), so commands and daemons on this host still open the store without a passphrase; "+
						"'credentials unlock --systemd-creds=off' removes that (the keystore needs a passphrase first).\n", mode)
				}
				if !dropped {
					fmt.Fprintln(d.Stdout, "No key was cached: the store is already locked (or not encrypted).")
					return nil
				}
				fmt.Fprintln(d.Stdout, "Locked. The proxy and SSH agent keep working until they stop; stop them to lock completely.")
				return nil
			}),
		},
		{
			Name:  "migrate",
			Usage: "bring every stored credential and SSH private key to the mode in force (encrypt plaintext ones; with credentials_encryption = false, decrypt them and remove the keystore)",
			Flags: []ucli.Flag{jsonFlag()},
			Action: withStore(func(c *ucli.Context, fa *cmdArgs, s secretsctl.Store) error {
				res, err := s.Migrate(c.Context)
				if err != nil {
					return err
				}
				return reportRewrite(d, fa.Bool("json"), res, map[bool]string{true: "Encrypted", false: "Decrypted"}[s.Encrypt])
			}),
		},
		{
			Name:  "rotate-key",
			Usage: "replace the data key and re-encrypt everything under the new one (safe to re-run after a crash); with --new-passphrase[-file] also change the passphrase",
			Flags: []ucli.Flag{jsonFlag(),
				&ucli.BoolFlag{Name: "new-passphrase", Usage: "also change the passphrase (asked on the terminal, twice)"},
				&ucli.StringFlag{Name: "new-passphrase-file", Usage: "also change the passphrase to the first line of this file"}},
			Action: withStore(func(c *ucli.Context, fa *cmdArgs, s secretsctl.Store) error {
				var pass []byte
				if file := fa.String("new-passphrase-file"); file != "" || fa.Bool("new-passphrase") {
					var err error
					if pass, err = readPassphrase(d, file, true); err != nil {
						return err
					}
					defer clear(pass)
				}
				res, err := s.Rotate(c.Context, pass, secretstore.DefaultKDF)
				if err != nil {
					return err
				}
				if res.PassphraseChanged && !fa.Bool("json") {
					defer fmt.Fprintln(d.Stdout, "Changed the passphrase; the new key is cached until 'terok-sandbox credentials lock' or reboot.")
				}
				return reportRewrite(d, fa.Bool("json"), res, "Re-encrypted")
			}),
		},
	}
}

func reportRewrite(d Deps, asJSON bool, res secretsctl.Result, verb string) error {
	if asJSON {
		return writeJSON(d.Stdout, res)
	}
	fmt.Fprintf(d.Stdout, "%s %d credentials and %d SSH key files in %s.\n", verb, res.Credentials, res.KeyFiles, res.Took.Round(time.Millisecond))
	if res.Removed {
		fmt.Fprintln(d.Stdout, "Removed the keystore: the store is plaintext again.")
	}
	if !res.WALClean {
		fmt.Fprintln(d.Stderr, "Warning: another process held the database open, so its write-ahead log may still hold old values; stop the proxy and run this again.")
	}
	return nil
}

// readPassphrase reads the passphrase from file (its first line) or from
// the terminal without echo; confirm asks twice (choosing a new one).
func readPassphrase(d Deps, file string, confirm bool) ([]byte, error) {
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("open passphrase file: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxPassphrase+1))
		if err != nil {
			return nil, fmt.Errorf("read passphrase file %s: %w", file, err)
		}
		if len(b) > maxPassphrase {
			return nil, fmt.Errorf("passphrase file %s is larger than %d bytes", file, maxPassphrase)
		}
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[:i]
		}
		b = bytes.TrimSuffix(b, []byte("\r"))
		if len(b) == 0 {
			return nil, fmt.Errorf("passphrase file %s is empty", file)
		}
		return b, nil
	}
	f, ok := d.Stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return nil, UsageErrorf("no terminal to read the passphrase from; give --passphrase-file")
	}
	prompt := "Passphrase: "
	if confirm {
		prompt = fmt.Sprintf("New passphrase for the credentials keystore (at least %d characters): ", secretstore.MinPassphrase)
	}
	fmt.Fprint(d.Stderr, prompt)
	p1, err := readNoEcho(f)
	fmt.Fprintln(d.Stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if !confirm {
		return p1, nil
	}
	fmt.Fprint(d.Stderr, "Repeat it: ")
	p2, err := readNoEcho(f)
	fmt.Fprintln(d.Stderr)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	defer clear(p2)
	if !bytes.Equal(p1, p2) {
		clear(p1)
		return nil, errors.New("the two passphrases differ; nothing was created")
	}
	return p1, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readNoEcho reads one line from the terminal f with echo off, restoring
// the terminal's settings afterwards (also when the read fails).
func readNoEcho(f *os.File) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }()
	var line []byte
	b := make([]byte, 1)
	for len(line) <= maxPassphrase {
		n, err := f.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return bytes.TrimSuffix(line, []byte("\r")), nil
			}
			line = append(line, b[0])
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, nil
			}
			clear(line)
			return nil, err
		}
	}
	clear(line)
	return nil, fmt.Errorf("the passphrase is longer than %d bytes", maxPassphrase)
}
