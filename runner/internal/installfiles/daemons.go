//go:build !urfave_cli_no_docs

package installfiles

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/manpage"
)

// DaemonPage is one daemon's man page: what the binary's -h does not say.
type DaemonPage struct {
	Name    string
	Summary string
	// Sub is a subcommand whose -h becomes a section of its own.
	Sub     string
	Notes   []manpage.Note
	SeeAlso []string
}

// DaemonPages are the daemons' pages (section 8: programs the system and
// podman run, not commands for users).
func DaemonPages() []DaemonPage {
	daemonRefs := []string{"terok-sandbox(1)", "systemd.socket(5)", "systemd.exec(5)"}
	seeAlso := "The full documentation is docs/ in the terok-sandbox source; /usr/share/doc/terok-sandbox has the README."
	return []DaemonPage{
		{
			Name:    "terok-gate",
			SeeAlso: daemonRefs,
			Summary: "git smart-HTTP server of the host-side mirrors, one project per task token",
			Notes: []manpage.Note{
				{Title: "Systemd", Paragraphs: []string{
					"Started by terok-gate.socket (socket activation, the descriptor named gate) as a Type=notify service: it reports READY=1 once it listens and tokens.json is readable, and STOPPING=1 when it drains on SIGTERM. terok-sandbox gate install or terok-sandbox setup installs and enables the units.",
				}},
				{Title: "Exit status", Paragraphs: []string{"0 on a clean stop, 1 on an error, 2 on bad usage."}},
				{Title: "Notes", Paragraphs: []string{seeAlso}},
			},
		},
		{
			Name:    "terok-credential-proxy",
			SeeAlso: daemonRefs,
			Summary: "reverse proxy that swaps a container's phantom token for the real credential",
			Notes: []manpage.Note{
				{Title: "Systemd", Paragraphs: []string{
					"Started by terok-credential-proxy.socket (the Unix socket and 127.0.0.1:PORT, both named credential-proxy) as a Type=notify service, ready once its listeners are up and the credentials database (and the key of an encrypted store) is readable. terok-sandbox proxy install or terok-sandbox setup installs the units.",
				}},
				{Title: "Exit status", Paragraphs: []string{"0 on a clean stop, 1 on an error, 2 on bad usage."}},
				{Title: "Notes", Paragraphs: []string{seeAlso}},
			},
		},
		{
			Name:    "terok-ssh-agent",
			SeeAlso: daemonRefs,
			Summary: "SSH agent over TCP that signs with a project's keys for the holder of a phantom token",
			Sub:     "bridge",
			Notes: []manpage.Note{
				{Title: "Systemd", Paragraphs: []string{
					"Started by terok-ssh-agent.socket (the descriptor named ssh-agent) as a Type=notify service, ready once it listens and the credentials database is readable. Private keys never enter a container: the bridge inside one relays each client to this agent.",
				}},
				{Title: "Exit status", Paragraphs: []string{"0 on a clean stop, 1 on an error, 2 on bad usage; the bridge with a COMMAND exits with the command's status."}},
				{Title: "Notes", Paragraphs: []string{seeAlso}},
			},
		},
		{
			Name:    "terok-shield-hook",
			SeeAlso: []string{"terok-sandbox(1)", "podman(1)", "oci-hooks(5)"},
			Summary: "OCI hook that puts the shield's egress firewall into a container's network namespace",
			Notes: []manpage.Note{
				{Title: "Description", Paragraphs: []string{
					"Podman runs this hook, never a user: at createRuntime it reads the OCI state of a container carrying the terok.shield.profiles annotation on standard input, applies the container's default-deny nftables ruleset in its network namespace, checks it and starts the container's DNS resolver; at poststop it stops what it started. Any failure fails the container's start (fail closed).",
					"terok-sandbox shield setup writes the hook descriptors (terok-shield-createRuntime.json, terok-shield-poststop.json) that name this binary, with a timeout of " + fmt.Sprint(shieldbundle.HookTimeoutSeconds) + " seconds, and refuses a binary anyone but root (or, for --user, the user) can change.",
				}},
				{Title: "Options", Paragraphs: []string{
					"createRuntime or poststop: the OCI hook stage (podman passes it). --bundle-version prints the version of the state bundle the hook reads; --version prints the program version.",
				}},
				{Title: "Files", Paragraphs: []string{
					"<task_dir>/shield/: ruleset.nft, the allow and deny lists, hook-error.log, dns.log and the audit log of the container.",
				}},
				{Title: "Notes", Paragraphs: []string{seeAlso}},
			},
		},
	}
}

// helpTimeout bounds one -h or --version run of a built daemon.
const helpTimeout = 30 * time.Second

// DaemonManPages renders the daemons' pages from the binaries in dir (a
// `make build` tree): their -h output and --version.
func DaemonManPages(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, d := range DaemonPages() {
		bin := filepath.Join(dir, d.Name)
		help, err := helpOf(bin)
		if err != nil {
			return nil, err
		}
		ver, err := runQuiet(bin, "--version")
		if err != nil {
			return nil, err
		}
		f := strings.Fields(string(ver))
		if len(f) != 2 || f[0] != d.Name {
			return nil, fmt.Errorf("%s --version printed %q, want %q", bin, ver, d.Name+" VERSION")
		}
		p := manpage.Page{Name: d.Name, Section: "8", Summary: d.Summary, Version: f[1], Help: help, Notes: d.Notes, SeeAlso: d.SeeAlso}
		if d.Sub != "" {
			sub, err := helpOf(bin, d.Sub)
			if err != nil {
				return nil, err
			}
			p.Extra = []manpage.Section{{Title: d.Sub, Help: sub}}
		}
		out["man/"+d.Name+".8"] = []byte(p.Roff())
	}
	return out, nil
}

func helpOf(bin string, sub ...string) (manpage.Help, error) {
	out, err := runQuiet(bin, append(sub, "-h")...)
	if err != nil {
		return manpage.Help{}, err
	}
	h, err := manpage.Parse(out)
	if err != nil {
		return manpage.Help{}, fmt.Errorf("%s %s -h: %w", bin, strings.Join(sub, " "), err)
	}
	return h, nil
}

// runQuiet runs bin with args in an empty environment and returns what it
// printed (a daemon prints its help on stderr).
func runQuiet(bin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), helpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, b.Bytes())
	}
	return b.Bytes(), nil
}
