package server

import (
	"strings"
	"testing"

	"terok.dev/sandbox/gate/internal/pushcmd"
)

// TestLayoutStageIsStable: a push whose refs collide as file and directory
// fails the same way every time (the staged files were written in map
// order, so either ref could be the one that failed).
func TestLayoutStageIsStable(t *testing.T) {
	old := strings.Repeat("a", 40)
	push := &pushcmd.Request{Commands: []pushcmd.Command{
		{Old: old, New: strings.Repeat("b", 40), Ref: "refs/heads/x/y"},
		{Old: old, New: strings.Repeat("c", 40), Ref: "refs/heads/x"},
	}}
	var first string
	for i := 0; i < 20; i++ {
		stage := t.TempDir()
		err := (&Handler{}).layoutStage(stage, t.TempDir(), push)
		if err == nil {
			t.Fatal("colliding refs staged")
		}
		msg := strings.ReplaceAll(err.Error(), stage, "STAGE")
		if i == 0 {
			first = msg
		} else if msg != first {
			t.Fatalf("run %d: %q, run 0: %q", i, msg, first)
		}
	}
}
