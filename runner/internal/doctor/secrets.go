package doctor

import (
	"context"
	"fmt"
	"strings"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/secretsctl"
)

// SecretsCheck is the host-side check of secrets at rest
// (docs/secrets-at-rest.md, Doctor): which mode is in force and why, and a
// warning with the command to run when the store is locked, values are
// still plaintext although encryption is on, a rotation is unfinished, or
// the config asks for plaintext while a keystore exists.
func SecretsCheck(cfg config.Config) Check { return secretsCheck(secretsctl.FromConfig(cfg)) }

func secretsCheck(store secretsctl.Store) Check {
	return Check{
		Category: "secrets",
		Label:    "Secrets at rest",
		HostSide: true,
		Evaluate: func(int, string, string) Verdict {
			ctx, cancel := context.WithTimeout(context.Background(), ProbeTimeout)
			defer cancel()
			st, err := store.Status(ctx)
			if err != nil {
				return Verdict{Severity: Error, Detail: "cannot read the credential store: " + err.Error()}
			}
			return secretsVerdict(st)
		},
	}
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
