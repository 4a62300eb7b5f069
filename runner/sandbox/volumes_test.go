package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run whose volume reaches its own task's shield state dir is refused
// before podman runs (launch.Params.ShieldStateDir comes from the task
// dir); the task's workspace beside it is mounted.
func TestRunRefusesVolumeOverOwnShieldState(t *testing.T) {
	s, _, runLog := coreBypassSandbox(t, 1000, "echo abc123")
	task := t.TempDir()
	work := filepath.Join(task, "workspace")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "innocent")
	if err := os.Symlink(task, link); err != nil {
		t.Fatal(err)
	}
	_, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: task,
		Volumes: []string{link + ":/data"}}, LifecycleHooks{})
	if err == nil || !strings.Contains(err.Error(), "shield state dir") {
		t.Fatalf("volume over the task dir: %v", err)
	}
	if _, statErr := os.Stat(runLog); statErr == nil {
		t.Fatal("podman ran despite the refusal")
	}
	if _, err := s.Run(context.Background(), RunSpec{ContainerName: "c", Image: "i", TaskDir: task,
		Volumes: []string{work + ":/workspace"}}, LifecycleHooks{}); err != nil {
		t.Fatalf("workspace volume: %v", err)
	}
}
