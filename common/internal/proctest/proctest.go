// Package proctest runs a test binary's own worker functions in separate
// processes, so tests can prove that the file locks hold between processes
// and not only between goroutines.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

const roleVar = "TEROK_PROCTEST_ROLE"

// Workers maps a role name to the function a child process runs. The
// function reads its parameters from the environment.
type Workers map[string]func() error

// Main runs the worker named by the environment and exits, or runs the
// tests when the process is not a worker. Call it from TestMain.
func Main(m *testing.M, w Workers) {
	role := os.Getenv(roleVar)
	if role == "" {
		os.Exit(m.Run())
	}
	fn, ok := w[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "proctest: unknown role %q\n", role)
		os.Exit(3)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "proctest %s: %v\n", role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Run starts n processes of role at once, each with env plus WORKER_INDEX,
// and fails the test if any of them fails.
func Run(t *testing.T, n int, role string, env ...string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append(env, roleVar+"="+role, fmt.Sprintf("WORKER_INDEX=%d", i))...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Sprintf("worker %s: %v: %s", role, err, strings.TrimSpace(string(out)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
