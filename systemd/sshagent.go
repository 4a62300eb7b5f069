package systemd

import _ "embed"

// Standalone SSH agent unit templates (docs/ssh-agent.md, The server). Usually the
// credential proxy supervises terok-ssh-agent; these units are for hosts
// that run the agent on its own (never both on one port). Placeholders:
// UNIT_VERSION, PORT, BIN, DB_PATH, SSH_KEYS_FILE, CREDENTIALS_DIR (the one
// directory the hardened service may write: the database's WAL files),
// AUDIT_DIR (also writable) and AUDIT_FILE (--audit-file: a path or off). The
// socket passes one TCP listener (FileDescriptorName=ssh-agent); --port
// then only documents the port. Bump SSHAgentUnitVersion whenever a
// template changes (2: hardening; 3: the shared keyring; 4:
// FileDescriptorName= and Type=notify; 5: --audit-file and the writable
// audit directory).
const (
	SSHAgentUnitVersion = 6
	SSHAgentSocketName  = "terok-ssh-agent.socket"
	SSHAgentServiceName = "terok-ssh-agent.service"
	SSHAgentStampPrefix = "# terok-ssh-agent-version:"
)

//go:embed terok-ssh-agent.socket
var SSHAgentSocket string

//go:embed terok-ssh-agent.service
var SSHAgentService string
