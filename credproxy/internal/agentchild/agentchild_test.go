package agentchild

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestArgsAndEnv(t *testing.T) {
	c := Config{DBPath: "/d/c.db", KeysFile: "/k.json", Port: 18732, LogLevel: "INFO", LogFile: "/l.log", AuditFile: "/s/audit/ssh.jsonl"}
	if got := strings.Join(c.Args(), " "); got != "--db-path=/d/c.db --ssh-keys-file=/k.json --port=18732 --bind=127.0.0.1 --log-level=INFO --log-file=/l.log --audit-file=/s/audit/ssh.jsonl" {
		t.Errorf("args %s", got)
	}
	env := childEnv([]string{"A=1", "LISTEN_PID=5", "LISTEN_FDS=2", "LISTEN_FDNAMES=x", "NOTIFY_SOCKET=/run/n", "B=2"})
	if strings.Join(env, ",") != "A=1,B=2" {
		t.Errorf("env %v", env)
	}
}

// TestRestartsWithBackoffAndStops uses a stand-in child that records each
// start and exits at once, so every start is a crash.
func TestRestartsWithBackoffAndStops(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "starts")
	script := filepath.Join(dir, "terok-ssh-agent")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\nexit 3\n"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, Config{Path: script, DBPath: "/db", KeysFile: "/k", Port: 1, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if strings.Count(string(b), "\n") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child not restarted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestSIGTERMForwarded: a long-running child gets SIGTERM when Run stops.
func TestSIGTERMForwarded(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "termed")
	script := filepath.Join(dir, "agent")
	os.WriteFile(script, []byte("#!/bin/sh\ntrap 'echo term > "+mark+"; exit 0' TERM\necho started > "+mark+".start\nwhile :; do sleep 0.05; done\n"), 0o755)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, Config{Path: script, StopTimeout: 20 * time.Second}); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(mark + ".start"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if b, _ := os.ReadFile(mark); strings.TrimSpace(string(b)) != "term" {
		t.Errorf("child did not get SIGTERM: %q", b)
	}
}
