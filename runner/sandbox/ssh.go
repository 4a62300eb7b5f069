package sandbox

import (
	"context"
	"fmt"
	"strconv"

	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/runner/internal/secretsctl"
	"terok.dev/sandbox/runner/internal/sshmanager"
)

// SSHInitOptions tune InitSSH; the zero value is an Ed25519 key named
// id_ed25519_<project> in <state_dir>/ssh-keys/<project> with the built-in
// ssh config.
type SSHInitOptions = sshmanager.InitOptions

// SSHInitResult is what InitSSH produced (absolute paths).
type SSHInitResult = sshmanager.InitResult

// SSHKeyRow is one row of ListSSHKeys.
type SSHKeyRow = sshmanager.Row

// Environment variables the in-container bridge (terok-ssh-agent bridge)
// reads (docs/ssh-agent.md, The bridge (inside a container)).
const (
	EnvSSHAgentToken = "TEROK_SSH_AGENT_TOKEN"
	EnvSSHAgentPort  = "TEROK_SSH_AGENT_PORT"
)

func (s *Sandbox) ssh() sshmanager.Manager { return sshmanager.New(s.cfg, s.env) }

// InitSSH creates the project's main SSH key (tk-main:<project>) and ssh
// config if missing (or always with o.Force) and registers the key in
// ssh-keys.json, so the SSH agent serves it to the project's tasks.
// o.Project is set from project.
func (s *Sandbox) InitSSH(project string, o SSHInitOptions) (SSHInitResult, error) {
	o.Project = project
	if err := sshmanager.CheckDestinations(o.Destinations); err != nil {
		return SSHInitResult{}, err
	}
	// Encryption at rest on by default (docs/secrets-at-rest.md, Modes):
	// the first secret written creates the keystore where a source allows.
	setup, err := secretsctl.FromConfig(s.cfg).EnsureEncrypted(context.Background())
	if err != nil {
		return SSHInitResult{}, err
	}
	if setup.Plaintext {
		s.log.Warn("SSH private key stored in plaintext: no key source without a passphrase; run 'terok-sandbox credentials unlock', then 'terok-sandbox credentials migrate'",
			"project", project, "why", setup.Warning)
	}
	if setup.Created {
		s.log.Info("encryption at rest on: created the keystore, sealed by systemd-creds", "mode", setup.Mode,
			"credentials_sealed", setup.Migrated.Credentials, "key_files_sealed", setup.Migrated.KeyFiles)
	}
	m := s.ssh()
	res, err := m.Init(o)
	if err != nil {
		return SSHInitResult{}, err
	}
	if err := m.Register(project, res.PrivateKey, res.PublicKey, o.Destinations...); err != nil {
		return SSHInitResult{}, fmt.Errorf("SSH key created at %s but not registered: %w", res.PrivateKey, err)
	}
	return res, nil
}

// SSHKeyRef names a registered SSH key: its project and the key (the KEY
// column of ListSSHKeys, the key file's name or the private key's path).
// A value rather than two strings, so the two cannot be swapped.
type SSHKeyRef struct {
	Project, Key string
}

// RestrictSSHKey binds a registered key to destinations (host patterns and
// SHA256 host key fingerprints; docs/ssh-agent.md, Destination-bound keys),
// or lifts the binding when destinations is empty.
func (s *Sandbox) RestrictSSHKey(key SSHKeyRef, destinations []string) (SSHKeyRow, error) {
	return s.ssh().Restrict(key.Project, key.Key, destinations)
}

// ListSSHKeys lists the registered keys (all projects when project is "").
func (s *Sandbox) ListSSHKeys(project string) ([]SSHKeyRow, error) { return s.ssh().List(project) }

// SSHAgentEnv issues the task's SSH agent phantom token and returns the
// container environment for the bridge: the token and the agent port.
func (s *Sandbox) SSHAgentEnv(ctx context.Context, t TaskRef) ([]EnvVar, error) {
	project, task := t.Project, t.Task
	if err := checkProjectTask("create SSH agent token", project, task); err != nil {
		return nil, err
	}
	db, err := creddb.Open(s.cfg.CredentialsDB())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	tok, err := db.CreateToken(ctx, creddb.TokenSpec{Project: project, Task: task, Set: creddb.DefaultSet, Provider: creddb.SSHProvider})
	if err != nil {
		return nil, err
	}
	return []EnvVar{
		{Name: EnvSSHAgentToken, Value: tok},
		{Name: EnvSSHAgentPort, Value: strconv.Itoa(s.cfg.SSHAgentPort)},
	}, nil
}
