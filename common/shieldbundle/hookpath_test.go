package shieldbundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDescriptorTimeout(t *testing.T) {
	for _, stage := range []string{StageCreateRuntime, StagePoststop} {
		b, err := Descriptor(stage, "/usr/libexec/terok/terok-shield-hook")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"timeout": 30`) {
			t.Errorf("%s descriptor lacks the timeout:\n%s", stage, b)
		}
		p, err := DescriptorHookPath(b)
		if err != nil || p != "/usr/libexec/terok/terok-shield-hook" {
			t.Errorf("DescriptorHookPath = %q, %v", p, err)
		}
	}
}

func TestDescriptorHookPath(t *testing.T) {
	for _, tt := range []struct {
		name, in, want string
		ok             bool
	}{
		{"plain", `{"hook":{"path":"/a/b"}}`, "/a/b", true},
		{"cleaned", `{"hook":{"path":"/a/./b/"}}`, "/a/b", true},
		{"relative", `{"hook":{"path":"a/b"}}`, "", false},
		{"missing", `{"hook":{}}`, "", false},
		{"no hook", `{}`, "", false},
		{"not json", `hook`, "", false},
		{"wrong type", `{"hook":{"path":3}}`, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DescriptorHookPath([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

func FuzzDescriptorHookPath(f *testing.F) {
	f.Add([]byte(`{"hook":{"path":"/a/b"}}`))
	f.Add([]byte(`{"hook":{"path":"rel"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DescriptorHookPath(data)
		if err == nil && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
			t.Fatalf("accepted %q for %q", p, data)
		}
	})
}

func TestCheckHookBinary(t *testing.T) {
	me := os.Geteuid()
	setup := func(t *testing.T, dirMode, fileMode os.FileMode) (dir, file string) {
		t.Helper()
		dir = filepath.Join(t.TempDir(), "libexec")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		file = filepath.Join(dir, HookBinary)
		if err := os.WriteFile(file, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		// Explicit chmod: the umask must not decide what the test checks.
		if err := os.Chmod(file, fileMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, dirMode); err != nil {
			t.Fatal(err)
		}
		return dir, file
	}
	for _, tt := range []struct {
		name              string
		dirMode, fileMode os.FileMode
		owners            []int
		wantErr           string
	}{
		{"safe", 0o755, 0o755, []int{me}, ""},
		{"file group-writable", 0o755, 0o775, []int{me}, "writable by its group"},
		{"file others-writable", 0o755, 0o757, []int{me}, "writable by others"},
		{"dir group-writable", 0o775, 0o755, []int{me}, "writable by its group"},
		{"dir others-writable", 0o757, 0o755, []int{me}, "writable by others"},
		{"sticky dir others-writable", os.ModeSticky | 0o777, 0o755, []int{me}, ""},
		{"not executable", 0o755, 0o644, []int{me}, "not an executable"},
		{"foreign owner", 0o755, 0o755, []int{me + 4242}, "owned by uid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, file := setup(t, tt.dirMode, tt.fileMode)
			owners := tt.owners
			// The temporary directory's parents (/, /tmp) are root's.
			if tt.wantErr != "owned by uid" {
				owners = append(owners, 0)
			}
			got, err := CheckHookBinary(file, owners)
			if tt.wantErr == "" {
				if err != nil || got != file {
					t.Fatalf("got %q, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	t.Run("symlink resolves to its target", func(t *testing.T) {
		dir, file := setup(t, 0o755, 0o755)
		link := filepath.Join(dir, "link")
		if err := os.Symlink(file, link); err != nil {
			t.Fatal(err)
		}
		got, err := CheckHookBinary(link, []int{me, 0})
		if err != nil || got != file {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("relative and missing", func(t *testing.T) {
		if _, err := CheckHookBinary("bin/hook", []int{me}); err == nil {
			t.Fatal("relative path accepted")
		}
		if _, err := CheckHookBinary(filepath.Join(t.TempDir(), "none"), []int{me, 0}); err == nil {
			t.Fatal("missing file accepted")
		}
	})
}
