package config

import "path/filepath"

// Derived paths (docs/config.md, Derived paths). Pure functions of the fields, so
// every component computes the same file for the same configuration.

// GateBasePath is the root of the bare mirrors served by the gate.
func (c Config) GateBasePath() string { return filepath.Join(c.StateDir, "gate") }

// GatePolicyDir holds the projects' push policies (<project>.json), where
// terok-gate looks by default (<base path>/policy; docs/gate.md, Push policy).
func (c Config) GatePolicyDir() string { return filepath.Join(c.StateDir, "gate", "policy") }

// GateTokenFile is tokens.json.
func (c Config) GateTokenFile() string { return filepath.Join(c.StateDir, "gate", "tokens.json") }

// GateTokenLock is the advisory lock beside tokens.json.
func (c Config) GateTokenLock() string {
	return filepath.Join(c.StateDir, "gate", "tokens.json.lock")
}

// GatePIDFile is the detached gate daemon's PID file.
func (c Config) GatePIDFile() string { return filepath.Join(c.RuntimeDir, "gate-server.pid") }

// ShieldProfilesDir holds user shield profiles; it hangs off the umbrella root.
func (c Config) ShieldProfilesDir() string {
	return filepath.Join(c.UmbrellaConfigDir, "shield", "profiles")
}

// CredentialsDB is the SQLite credential store.
func (c Config) CredentialsDB() string { return filepath.Join(c.CredentialsDir, "credentials.db") }

// ProxySocket is the credential proxy's Unix socket.
func (c Config) ProxySocket() string {
	return filepath.Join(c.RuntimeDir, "credential-proxy.sock")
}

// ProxyPIDFile is the proxy daemon's PID file.
func (c Config) ProxyPIDFile() string { return filepath.Join(c.RuntimeDir, "credential-proxy.pid") }

// RoutesFile is the provider routing table.
func (c Config) RoutesFile() string { return filepath.Join(c.CredentialsDir, "routes.json") }

// SSHKeysDir holds one key directory per project.
func (c Config) SSHKeysDir() string { return filepath.Join(c.StateDir, "ssh-keys") }

// SSHKeysJSON is the project → key paths map.
func (c Config) SSHKeysJSON() string { return filepath.Join(c.CredentialsDir, "ssh-keys.json") }

// ProxyLogFile is where a runner-started proxy daemon logs.
func (c Config) ProxyLogFile() string {
	return filepath.Join(c.StateDir, "proxy", "credential-proxy.log")
}

// TaskEndsDir is where the ends of task containers are recorded
// (common/taskend; docs/formats.md, Task ends).
func (c Config) TaskEndsDir() string { return filepath.Join(c.StateDir, "task-ends") }

// ShieldStateDir is the per-task shield bundle directory.
func ShieldStateDir(taskDir string) string { return filepath.Join(taskDir, "shield") }

// AuditDir holds the daemons' audit files (docs/audit.md, Files, rotation, modes).
func (c Config) AuditDir() string { return filepath.Join(c.StateDir, "audit") }

// AuditFile is the audit file of one channel ("proxy", "gate", "ssh"); the
// shield's records live per container (docs/audit.md, Files, rotation, modes).
func (c Config) AuditFile(channel string) string {
	return filepath.Join(c.AuditDir(), channel+".jsonl")
}
