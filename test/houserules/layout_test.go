package houserules

import (
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// ownBinary is the name of the binary module ships (from binaries, the
// product binaries), or "" for a module without one. A test that builds or
// starts its own module's binary is the binary's integration test
// (docs/testing.md, Where tests live).
func ownBinary(module string) string {
	for _, b := range binaries {
		if b.module == module {
			return path.Base(b.main)
		}
	}
	return ""
}

// integrationDirs are where a module's real-binary tests may live: its
// integration/ folder, and for the runner also the real-podman suite.
func integrationDirs(module string) []string {
	dirs := []string{module + "/integration/"}
	if module == "runner" {
		dirs = append(dirs, "runner/e2e/")
	}
	return dirs
}

// buildsLocal is `go build` of the package in the test's own folder, as a
// test next to a main.go does.
var buildsLocal = regexp.MustCompile(`"build",\s*"-o",\s*[^,()]+,\s*"\."`)

// runsOwnBinary says why the _test.go file name (source src) builds or
// starts its own module's binary, or "" when it does not: the main
// package's import path, `go build .` next to that main package, or the
// binary taken from TEROK_BIN_DIR by name.
func runsOwnBinary(name string, src []byte) string {
	module, _, _ := strings.Cut(name, "/")
	bin := ownBinary(module)
	if bin == "" || !strings.HasSuffix(name, "_test.go") {
		return ""
	}
	main := prefix + module + "/cmd/" + bin
	switch {
	case bytes.Contains(src, []byte(`"`+main+`"`)):
		return "builds " + main
	case strings.HasPrefix(path.Dir(name), module+"/cmd/") && buildsLocal.Match(src):
		return "builds its main package (go build .)"
	case bytes.Contains(src, []byte("TEROK_BIN_DIR")) && bytes.Contains(src, []byte(`"`+bin+`"`)):
		return "runs $TEROK_BIN_DIR/" + bin
	}
	return ""
}

// misplaced returns "file: reason" for every test among files (path ->
// source) that runs its own module's binary outside the module's
// integration folders.
func misplaced(files map[string][]byte) []string {
	var bad []string
	for name, src := range files {
		why := runsOwnBinary(name, src)
		if why == "" {
			continue
		}
		module, _, _ := strings.Cut(name, "/")
		allowed := false
		for _, d := range integrationDirs(module) {
			allowed = allowed || strings.HasPrefix(name, d)
		}
		if !allowed {
			bad = append(bad, fmt.Sprintf("%s: %s, so it belongs in %s", name, why, strings.Join(integrationDirs(module), " or ")))
		}
	}
	sort.Strings(bad)
	return bad
}

// TestIntegrationTestsInTheirPlace: a test that builds or starts its own
// module's binary lives in <module>/integration/ (the runner's podman tests
// in runner/e2e/), so each module's real-binary suite is in one
// predictable place and unit tests stay beside the code.
func TestIntegrationTestsInTheirPlace(t *testing.T) {
	root := repoRoot(t)
	files := map[string][]byte{}
	for _, f := range trackedFiles(t, root, "_test.go") {
		src, err := readTracked(root, f)
		if err != nil {
			t.Fatal(err)
		}
		if src != nil {
			files[f] = src
		}
	}
	for _, b := range misplaced(files) {
		t.Errorf("%s (docs/testing.md, Where tests live)", b)
	}
}

func TestIntegrationPlaceRule(t *testing.T) {
	files := map[string][]byte{
		// next to main.go, building it: the gate's tests before they moved
		"gate/cmd/terok-gate/x_test.go": []byte(`exec.Command("go", "build", "-o", gateBin, ".")`),
		// a unit test building its own module's binary by path
		"sshagent/internal/app/x_test.go": []byte(`exec.Command("go", "build", "-o", bin, "terok.dev/sandbox/sshagent/cmd/terok-ssh-agent")`),
		// the prebuilt binary from TEROK_BIN_DIR
		"shield-hook/internal/hook/x_test.go": []byte(`filepath.Join(os.Getenv("TEROK_BIN_DIR"), "terok-shield-hook")`),
		// allowed: in the integration folder, or the runner's e2e suite
		"gate/integration/x_test.go":   []byte(`exec.Command("go", "build", "-o", gateBin, "terok.dev/sandbox/gate/cmd/terok-gate")`),
		"runner/e2e/x_test.go":         []byte(`"terok.dev/sandbox/runner/cmd/terok-sandbox"`),
		"runner/integration/x_test.go": []byte(`"terok.dev/sandbox/runner/cmd/terok-sandbox"`),
		// allowed: another module's daemon as the peer of a package test
		"runner/internal/daemonctl/x_test.go": []byte(`GateBinary: "terok.dev/sandbox/gate/cmd/terok-gate"`),
		// not a test, and a go build of "." outside cmd/
		"gate/cmd/terok-gate/main.go":    []byte(`"terok.dev/sandbox/gate/cmd/terok-gate"`),
		"common/x/x_test.go":             []byte(`exec.Command("go", "build", "-o", bin, ".")`),
		"credproxy/internal/p/x_test.go": []byte(`exec.Command(os.Args[0], "-test.run=^TestHelper$")`),
	}
	got := misplaced(files)
	want := []string{"gate/cmd/terok-gate/x_test.go", "shield-hook/internal/hook/x_test.go", "sshagent/internal/app/x_test.go"}
	if len(got) != len(want) {
		t.Fatalf("misplaced = %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]+": ") || !strings.Contains(got[i], "integration/") {
			t.Errorf("misplaced[%d] = %q, want %s naming its integration folder", i, got[i], want[i])
		}
	}
}
