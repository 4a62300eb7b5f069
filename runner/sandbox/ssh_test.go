package sandbox

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/creddb"
	"terok.dev/sandbox/common/sshkeys"
)

func TestInitSSHAndAgentEnv(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Config{StateDir: filepath.Join(dir, "state"), CredentialsDir: filepath.Join(dir, "creds"),
		RuntimeDir: filepath.Join(dir, "run"), SSHAgentPort: 18999}
	s := New(cfg, Options{Env: config.Env{Home: dir, Getenv: func(string) string { return "" }}})
	res, err := s.InitSSH("proj", SSHInitOptions{KeyType: "rsa"})
	if err != nil {
		t.Fatal(err)
	}
	if res.PrivateKey != filepath.Join(dir, "state", "ssh-keys", "proj", "id_rsa_proj") {
		t.Fatalf("%+v", res)
	}
	km, err := sshkeys.Read(cfg.SSHKeysJSON())
	if err != nil || len(km["proj"]) != 1 || km["proj"][0].PrivateKey != res.PrivateKey {
		t.Fatalf("not registered: %v %v", km, err)
	}
	rows, err := s.ListSSHKeys("proj")
	if err != nil || len(rows) != 1 || rows[0].Key != "tk-main:proj" || rows[0].Type != "rsa" {
		t.Fatalf("list: %+v %v", rows, err)
	}
	env, err := s.SSHAgentEnv(context.Background(), "proj", "t1")
	if err != nil || len(env) != 2 || env[1] != (EnvVar{EnvSSHAgentPort, "18999"}) || !strings.HasPrefix(env[0].Value, "terok-p-") {
		t.Fatalf("env: %+v %v", env, err)
	}
	db, err := creddb.Open(cfg.CredentialsDB())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if info, err := db.LookupToken(context.Background(), env[0].Value); err != nil || info.Provider != "ssh" || info.Project != "proj" {
		t.Fatalf("token: %+v %v", info, err)
	}
}
