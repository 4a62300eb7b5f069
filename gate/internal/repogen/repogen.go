// Package repogen generates deterministic bare git repositories for the
// gate's benchmarks: the same Spec always yields the same commits (fixed
// seed, fixed dates), so figures from different runs compare like for like.
// Repositories are built with git fast-import and cached under /var/tmp.
package repogen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Spec describes a repository.
type Spec struct {
	Name string
	// Files in the first commit, spread over directories of 100 files.
	Files int
	// MeanSize is the mean file size in bytes; sizes vary from 1/4 to 7/4 of it.
	MeanSize int
	// RandomShare is the percentage of files with incompressible content;
	// the rest is source-like text that compresses and deltas well.
	RandomShare int
	// Commits after the first one; each rewrites ChurnFiles files.
	Commits, ChurnFiles int
	// MinPackBytes is checked after generation (0 = no check).
	MinPackBytes int64
	Seed         uint64
}

// Big is the benchmark's large repository: >= 10k files and a >= 50 MB pack.
var Big = Spec{Name: "big-v1", Files: 10000, MeanSize: 6000, RandomShare: 85, Commits: 20, ChurnFiles: 100,
	MinPackBytes: 50 << 20, Seed: 0x7e20c6a7e}

// Small is the repository of the concurrent-clone benchmark.
var Small = Spec{Name: "small-v1", Files: 60, MeanSize: 2000, RandomShare: 20, Commits: 5, ChurnFiles: 5, Seed: 42}

// CacheDir is where generated repositories are kept between runs.
func CacheDir() string { return filepath.Join("/var/tmp", "terok-gate-bench") }

// Cached returns the bare repository for spec under CacheDir, generating it
// on first use (into a temporary directory renamed into place, so an
// interrupted run leaves no half-made repository behind).
func Cached(ctx context.Context, spec Spec) (string, error) {
	dir := CacheDir()
	final := filepath.Join(dir, spec.Name+".git")
	if _, err := os.Stat(filepath.Join(final, "terok-repogen-done")); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, spec.Name+".tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	repo := filepath.Join(tmp, "repo.git")
	if err := Generate(ctx, repo, spec); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(repo, "terok-repogen-done"), []byte(spec.Name+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(final)
	if err := os.Rename(repo, final); err != nil {
		return "", err
	}
	return final, nil
}

// gitEnv isolates the generator from the operator's git configuration.
func gitEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
}

func git(ctx context.Context, dir string, stdin io.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Generate creates the bare repository at dir.
func Generate(ctx context.Context, dir string, spec Spec) error {
	if spec.Files <= 0 || spec.MeanSize <= 0 {
		return errors.New("repogen: spec needs files and a mean size")
	}
	if err := git(ctx, "", nil, "init", "-q", "--bare", "-b", "main", dir); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(pw, 1<<20)
		err := stream(w, spec)
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
		errc <- err
	}()
	ferr := git(ctx, dir, pr, "fast-import", "--quiet")
	pr.CloseWithError(io.ErrClosedPipe)
	if werr := <-errc; werr != nil && ferr == nil {
		ferr = werr
	}
	if ferr != nil {
		return ferr
	}
	if err := git(ctx, dir, nil, "repack", "-a", "-d", "-q"); err != nil {
		return err
	}
	if spec.MinPackBytes > 0 {
		packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
		var total int64
		for _, p := range packs {
			if fi, err := os.Stat(p); err == nil {
				total += fi.Size()
			}
		}
		if total < spec.MinPackBytes {
			return fmt.Errorf("repogen: pack is %d bytes, spec wants >= %d", total, spec.MinPackBytes)
		}
	}
	return nil
}

var words = strings.Fields(`func return if else for range var const type struct interface map chan go
defer select case switch package import string int error nil true false make append len copy
request response handler token project repository mirror branch commit object stream buffer`)

// content makes one file's bytes.
func content(r *rand.Rand, size int, random bool) []byte {
	b := make([]byte, size)
	if random {
		for i := 0; i+8 <= size; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8; j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
		for i := size &^ 7; i < size; i++ {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	b = b[:0]
	for len(b) < size {
		n := 1 + r.IntN(10)
		b = append(b, strings.Repeat("\t", r.IntN(3))...)
		for i := 0; i < n; i++ {
			b = append(b, words[r.IntN(len(words))]...)
			b = append(b, ' ')
		}
		b = append(b, '\n')
	}
	return b[:size]
}

func path(i int) string { return fmt.Sprintf("dir%03d/file%05d.dat", i/100, i) }

// stream writes the fast-import stream of spec.
func stream(w *bufio.Writer, spec Spec) error {
	r := rand.New(rand.NewPCG(spec.Seed, spec.Seed^0x9e3779b97f4a7c15))
	size := func() int { return spec.MeanSize/4 + r.IntN(spec.MeanSize*3/2+1) }
	isRandom := make([]bool, spec.Files)
	for i := range isRandom {
		isRandom[i] = r.IntN(100) < spec.RandomShare
	}
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	mark := 0
	commit := func(n int, files []int) error {
		marks := make([]int, len(files))
		for k, i := range files {
			mark++
			marks[k] = mark
			data := content(r, size(), isRandom[i])
			fmt.Fprintf(w, "blob\nmark :%d\ndata %d\n", mark, len(data))
			w.Write(data)
			w.WriteByte('\n')
		}
		msg := fmt.Sprintf("commit %d\n", n)
		fmt.Fprintf(w, "commit refs/heads/main\nauthor Bench <bench@example.invalid> %d +0000\ncommitter Bench <bench@example.invalid> %d +0000\ndata %d\n%s",
			when+int64(n)*3600, when+int64(n)*3600, len(msg), msg)
		for k, i := range files {
			fmt.Fprintf(w, "M 100644 :%d %s\n", marks[k], path(i))
		}
		w.WriteByte('\n')
		return nil
	}
	all := make([]int, spec.Files)
	for i := range all {
		all[i] = i
	}
	if err := commit(0, all); err != nil {
		return err
	}
	for c := 1; c <= spec.Commits; c++ {
		files := make([]int, 0, spec.ChurnFiles)
		for k := 0; k < spec.ChurnFiles; k++ {
			files = append(files, r.IntN(spec.Files))
		}
		if err := commit(c, files); err != nil {
			return err
		}
	}
	return nil
}
