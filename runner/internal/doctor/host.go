package doctor

import (
	"errors"
	"fmt"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/seccomp"
)

// HostChecks are the host-side checks of the sandbox's own hardening: the
// seccomp profile every launch needs (docs/seccomp.md) and the static
// phantom marker switch (docs/credential-proxy.md).
func HostChecks(cfg config.Config, euid int) []Check {
	return []Check{SeccompCheck(seccomp.Path(cfg.ConfigDir), euid), StaticMarkerCheck(cfg.ProxyStaticMarker), SecretsCheck(cfg, euid)}
}

// SeccompCheck verifies the profile at path as a launch would: it exists,
// parses, still refuses AF_VSOCK (and every family outside the allowlist),
// socketcall and io_uring, and nobody but its owner or root can change it.
func SeccompCheck(path string, euid int) Check {
	return Check{
		Category: "security",
		Label:    "Seccomp profile",
		HostSide: true,
		Evaluate: func(ProbeOutput) Verdict {
			err := seccomp.Load(path, euid)
			switch {
			case err == nil:
				return Verdict{Severity: OK, Detail: fmt.Sprintf("%s refuses AF_VSOCK and the other unneeded socket families, socketcall and io_uring", path)}
			case errors.Is(err, seccomp.ErrMissing):
				return Verdict{Severity: Error, Fixable: true, Detail: "no seccomp profile: every launch is refused — " + err.Error()}
			default:
				return Verdict{Severity: Error, Fixable: true, Detail: "every launch is refused — " + err.Error()}
			}
		},
		FixDescription: "Regenerate the profile: terok-sandbox shield setup --root (rootful) or --user (rootless).",
	}
}

// StaticMarkerCheck warns while the proxy accepts the static phantom
// marker.
func StaticMarkerCheck(enabled bool) Check {
	return Check{
		Category: "security",
		Label:    "Static phantom marker",
		HostSide: true,
		Evaluate: func(ProbeOutput) Verdict {
			if !enabled {
				return Verdict{Severity: OK, Detail: "refused (proxy_static_marker is off)"}
			}
			return Verdict{Severity: Warn, Fixable: true, Detail: "proxy_static_marker = true: any container that reaches the credential proxy gets the default credential, " +
				"without a token and without revocation; set proxy_static_marker = false in config.toml and restart the proxy"}
		},
		FixDescription: "Set proxy_static_marker = false in config.toml, then restart the credential proxy.",
	}
}
