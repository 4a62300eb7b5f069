package systemd

import _ "embed"

// Gate unit templates. Placeholders: UNIT_VERSION, PORT, TEROK_GATE_BIN,
// GATE_BASE_PATH (also the one directory the hardened service may write),
// TOKEN_FILE, AUDIT_DIR (also writable) and AUDIT_FILE (--audit-file: a path
// or off). Bump GateUnitVersion whenever a template changes so
// installations are reported as outdated (8: hardening; 9: FileDescriptorName=
// and Type=notify; 10: --audit-file and the writable audit directory).
//
// Version 7 replaced the earlier units (version 6: Accept=yes and a
// `terok-gate --inetd` process per connection; docs/gate.md, Operating it),
// under a higher version: the socket hands its listener to one long-lived
// terok-gate (LISTEN_FDS). A process per connection paid a process start
// per clone and threw away the gate's answer caches (capability
// advertisement, ls-refs, clone-like fetches) with every connection.
const (
	GateUnitVersion = 11
	GateSocketName  = "terok-gate.socket"
	GateServiceName = "terok-gate.service"
	GateStampPrefix = "# terok-gate-version:"
)

// LegacyGateServiceName is the v6 per-connection service template, which
// an install of v7 replaces and an uninstall removes.
const LegacyGateServiceName = "terok-gate@.service"

//go:embed terok-gate.socket
var GateSocket string

//go:embed terok-gate.service
var GateService string
