package doctor

import (
	"context"
	"fmt"
	"os"
	"strings"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/seccomp"
	"terok.dev/sandbox/runner/internal/secretsctl"
)

// SecretsCheck is the host-side check of secrets at rest
// (docs/secrets-at-rest.md, Doctor): which mode is in force and why, and a
// warning with the command to run when the store is locked, values are
// still plaintext although encryption is on, a rotation is unfinished, or
// the config asks for plaintext while a keystore exists.
//
// Rootful (euid 0) it also evaluates the sandbox's seccomp profile for
// keyctl(2): a rootful task container runs as root, the UID whose kernel
// keyring caches the KEK after an unlock, and reads it unless keyctl is
// refused (rootless containers have keyrings of their own).
func SecretsCheck(cfg config.Config, euid int) Check {
	profile := ""
	if euid == 0 {
		profile = seccomp.Path(cfg.ConfigDir)
	}
	return secretsCheck(secretsctl.FromConfig(cfg), profile)
}

func secretsCheck(store secretsctl.Store, seccompProfile string) Check {
	return Check{
		Category: "secrets",
		Label:    "Secrets at rest",
		HostSide: true,
		Evaluate: func(ProbeOutput) Verdict {
			ctx, cancel := context.WithTimeout(context.Background(), ProbeTimeout)
			defer cancel()
			st, err := store.Status(ctx)
			if err != nil {
				return Verdict{Severity: Error, Detail: "cannot read the credential store: " + err.Error()}
			}
			v := secretsVerdict(st)
			if st.Mode == "encrypted" && seccompProfile != "" {
				if why := keyctlAllowed(seccompProfile); why != "" {
					v.Severity = maxSeverity(v.Severity, Warn)
					v.Detail += "; " + why
				}
			}
			return v
		},
	}
}

// keyctlAllowed says why task containers could reach the kernel keyring
// under the profile at path ("" when keyctl, add_key and request_key are
// all refused, or the profile is missing: the seccomp check reports that).
func keyctlAllowed(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	p, err := seccomp.Parse(data)
	if err != nil {
		return ""
	}
	var open []string
	for _, sys := range []string{"keyctl", "add_key", "request_key"} {
		for _, caps := range []bool{false, true} {
			if out, err := p.Evaluate(sys, [6]uint64{}, caps); err == nil && out.Allowed() {
				open = append(open, sys)
				break
			}
		}
	}
	if len(open) == 0 {
		return ""
	}
	return fmt.Sprintf("the seccomp profile %s allows %s: a rootful task container (root, like the cache) can read the key cached by 'credentials unlock'; the profile must refuse keyctl, add_key and request_key",
		path, strings.Join(open, ", "))
}

func maxSeverity(a, b Severity) Severity {
	rank := map[Severity]int{OK: 0, Warn: 1, Error: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// secretsVerdict turns a status into the check's verdict.
func secretsVerdict(st secretsctl.Status) Verdict {
	detail := fmt.Sprintf("%s: %s; %s; credentials %d sealed/%d plaintext, key files %d sealed/%d plaintext",
		st.Mode, st.Why, st.State, st.Credentials.Sealed, st.Credentials.Plaintext, st.KeyFiles.Sealed, st.KeyFiles.Plaintext)
	if !st.Problem {
		return Verdict{Severity: OK, Detail: detail}
	}
	if len(st.Next) > 0 {
		next := make([]string, len(st.Next))
		for i, n := range st.Next {
			next[i] = strings.TrimSpace(strings.SplitN(n, "#", 2)[0])
		}
		detail += "; run: " + strings.Join(next, ", then ")
	}
	return Verdict{Severity: Warn, Detail: detail}
}
