package sandbox

import (
	"context"
	"os"
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
	env, err := s.SSHAgentEnv(context.Background(), TaskRef{Project: "proj", Task: "t1"})
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

// InitSSH with Destinations registers a bound key; a bad destination fails
// before any file exists; RestrictSSHKey changes and lifts the binding.
func TestInitSSHDestinations(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Config{StateDir: filepath.Join(dir, "state"), CredentialsDir: filepath.Join(dir, "creds"),
		RuntimeDir: filepath.Join(dir, "run")}
	s := New(cfg, Options{Env: config.Env{Home: dir, Getenv: func(string) string { return "" }}})
	if _, err := s.InitSSH("bad", SSHInitOptions{Destinations: []string{"not a host"}}); err == nil {
		t.Fatal("bad destination accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "ssh-keys", "bad")); !os.IsNotExist(err) {
		t.Fatalf("a refused init created the key directory: %v", err)
	}
	if _, err := s.InitSSH("proj", SSHInitOptions{Destinations: []string{"github.com"}}); err != nil {
		t.Fatal(err)
	}
	rows, err := s.ListSSHKeys("proj")
	if err != nil || len(rows) != 1 || strings.Join(rows[0].Destinations, ",") != "github.com" {
		t.Fatalf("list: %+v %v", rows, err)
	}
	if r, err := s.RestrictSSHKey(SSHKeyRef{Project: "proj", Key: "tk-main:proj"}, []string{"*.example.org"}); err != nil || r.Destinations[0] != "*.example.org" {
		t.Fatalf("restrict: %+v %v", r, err)
	}
	if _, err := s.RestrictSSHKey(SSHKeyRef{Project: "proj", Key: "tk-main:proj"}, nil); err != nil {
		t.Fatal(err)
	}
	if rows, _ := s.ListSSHKeys("proj"); rows[0].Destinations != nil {
		t.Fatalf("binding not lifted: %+v", rows[0])
	}
}
