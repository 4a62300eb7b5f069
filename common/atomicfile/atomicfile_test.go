package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileModesAndNoLeftovers(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(data) != "two" || fi.Mode().Perm() != 0o640 {
		t.Errorf("content %q mode %v", data, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	// Replace: the same without fsyncs.
	if err := Replace(p, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(p)
	fi, _ = os.Stat(p)
	if entries, _ := os.ReadDir(dir); string(data) != "three" || fi.Mode().Perm() != 0o600 || len(entries) != 1 {
		t.Errorf("Replace: content %q mode %v entries %v", data, fi.Mode().Perm(), entries)
	}
}

func TestMkdirPrivateAndCreateIfMissing(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := MkdirPrivate(dir); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode().Perm())
	}
	p := filepath.Join(dir, "sub", "routes.json")
	if err := CreateIfMissing(p, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte(`{"x":{}}`), 0o600)
	if err := CreateIfMissing(p, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(p); string(data) != `{"x":{}}` {
		t.Errorf("existing file overwritten: %q", data)
	}
}

// BenchmarkWriteFile and BenchmarkReplace: the cost of the fsyncs.
func BenchmarkWriteFile(b *testing.B) { benchWrite(b, WriteFile) }
func BenchmarkReplace(b *testing.B)   { benchWrite(b, Replace) }

func benchWrite(b *testing.B, write func(string, []byte, os.FileMode) error) {
	p := filepath.Join(b.TempDir(), "f.json")
	data := []byte(`{"container":"p-t1","started":"2026-12-03T12:39:58.5Z","phase":"running","pid":48211}` + "\n")
	for i := 0; i < b.N; i++ {
		if err := write(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}
