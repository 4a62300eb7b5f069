package testkit

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestFreePortIsBindable(t *testing.T) {
	for i := 0; i < 3; i++ {
		p := FreePort(t)
		if p <= 0 || p > 65535 {
			t.Fatalf("port %d out of range", p)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("FreePort gave %d, which cannot be bound: %v", p, err)
		}
		ln.Close()
	}
}

func TestRootVarsAndEnv(t *testing.T) {
	dir := t.TempDir()
	vars := RootVars(dir)
	vars["HOME"] = dir
	env := Env(vars, 1000, dir)
	tests := []struct {
		name, got, want string
	}{
		{"state", env.StateRoot(), filepath.Join(dir, "state")},
		{"runtime", env.RuntimeRoot(), filepath.Join(dir, "run")},
		{"config", env.ConfigRoot(), filepath.Join(dir, "cfg")},
		{"credentials", env.CredentialsRoot(), filepath.Join(dir, "cred")},
		{"umbrella", env.UmbrellaConfigRoot(), filepath.Join(dir, "umbrella")},
		{"no leak from the process", env.Getenv("PATH"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestEnvironSorted(t *testing.T) {
	got := Environ(map[string]string{"B": "2", "A": "1=x", "C": ""})
	if want := "A=1=x B=2 C="; strings.Join(got, " ") != want {
		t.Fatalf("Environ = %q, want %q", got, want)
	}
}
