// Package houserules checks the workspace's structural rules (DEVELOPERS.md,
// "Layout"): what each binary may link, that no daemon imports another
// daemon's module, that every module is tidy on its own, and that modules
// shared by several go.mod files are required at one version everywhere.
// The checks ask the go command about the real tree; nothing is hard-coded
// except the allowlists below, which are the rule itself.
package houserules

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const prefix = "terok.dev/sandbox/"

// binary is one product binary: its module folder, main package, the build
// tags the Makefile builds it with, and the third-party modules it may link.
type binary struct {
	module, main string
	tags         string
	// allow lists the modules outside this workspace the binary may depend
	// on. Adding one is a decision: say why in the commit that adds it.
	allow []string
	// workspace lists the workspace modules besides its own and common.
	workspace []string
}

var binaries = []binary{
	{module: "gate", main: "./cmd/terok-gate",
		allow: []string{"github.com/BurntSushi/toml", "github.com/coreos/go-systemd/v22", "github.com/sosedoff/gitkit", "golang.org/x/sys"}},
	{module: "credproxy", main: "./cmd/terok-credential-proxy",
		allow: []string{"github.com/BurntSushi/toml", "github.com/coreos/go-systemd/v22", "github.com/jmoiron/sqlx", "github.com/mattn/go-sqlite3",
			"golang.org/x/crypto", "golang.org/x/sys"}},
	{module: "sshagent", main: "./cmd/terok-ssh-agent", tags: "netgo osusergo sqlite_omit_load_extension",
		allow: []string{"github.com/BurntSushi/toml", "github.com/coreos/go-systemd/v22", "github.com/jmoiron/sqlx",
			"github.com/mattn/go-sqlite3", "golang.org/x/crypto", "golang.org/x/sys"}},
	{module: "shield-hook", main: "./cmd/terok-shield-hook",
		allow: []string{"github.com/BurntSushi/toml", "github.com/google/nftables", "github.com/mdlayher/netlink", "github.com/mdlayher/socket",
			"github.com/miekg/dns", "github.com/opencontainers/runtime-spec", "github.com/vishvananda/netlink",
			"github.com/vishvananda/netns", "golang.org/x/net", "golang.org/x/sync", "golang.org/x/sys"}},
	{module: "runner", main: "./cmd/terok-sandbox", tags: "urfave_cli_no_docs",
		workspace: []string{"systemd"},
		allow: []string{"github.com/BurntSushi/toml", "github.com/jmoiron/sqlx", "github.com/mattn/go-sqlite3",
			"github.com/urfave/cli/v2", "github.com/xrash/smetrics", "golang.org/x/crypto", "golang.org/x/sys"}},
}

// repoRoot is the workspace root (the folder holding go.work).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.work")); err != nil {
		t.Fatalf("workspace root %s has no go.work: %v", dir, err)
	}
	return dir
}

// goCmd runs the go command in dir and returns its standard output.
func goCmd(t *testing.T, dir string, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return out
}

type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Module     *struct{ Path string }
}

// deps lists the packages the binary links (go list -deps -json), keyed by
// import path.
func deps(t *testing.T, root string, b binary) (map[string]pkg, string) {
	t.Helper()
	args := []string{"list", "-deps", "-json=ImportPath,Standard,Imports,Module"}
	if b.tags != "" {
		args = append(args, "-tags", b.tags)
	}
	args = append(args, b.main)
	out := goCmd(t, filepath.Join(root, b.module), nil, args...)
	dec := json.NewDecoder(bytes.NewReader(out))
	all := map[string]pkg{}
	var mainPath string
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		all[p.ImportPath] = p
		mainPath = p.ImportPath // -deps prints the named package last
	}
	return all, mainPath
}

// chain returns the import path from the main package to target.
func chain(all map[string]pkg, from, target string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == target {
			var path []string
			for p := cur; p != ""; p = prev[p] {
				path = append([]string{p}, path...)
			}
			return path
		}
		for _, imp := range all[cur].Imports {
			if _, seen := prev[imp]; !seen {
				prev[imp] = cur
				queue = append(queue, imp)
			}
		}
	}
	return []string{target}
}

func TestBinaryDependencies(t *testing.T) {
	root := repoRoot(t)
	for _, b := range binaries {
		t.Run(b.module, func(t *testing.T) {
			all, mainPath := deps(t, root, b)
			allowed := map[string]bool{prefix + b.module: true, prefix + "common": true}
			for _, w := range b.workspace {
				allowed[prefix+w] = true
			}
			for _, m := range b.allow {
				allowed[m] = true
			}
			reported := map[string]bool{}
			paths := make([]string, 0, len(all))
			for p := range all {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			for _, p := range paths {
				pk := all[p]
				if pk.Standard || pk.Module == nil {
					continue
				}
				mod := pk.Module.Path
				if allowed[mod] || reported[mod] {
					continue
				}
				reported[mod] = true
				why := "it is not on the binary's allowlist (test/houserules)"
				if strings.HasPrefix(mod, prefix) {
					why = "a binary may use only its own module and common; daemons never import each other"
				}
				t.Errorf("%s links module %s: %s\n  import chain: %s", b.main, mod, why, strings.Join(chain(all, mainPath, p), " -> "))
			}
		})
	}
}

// modules are the workspace's modules, read from go.work.
func modules(t *testing.T, root string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "use ("):
			in = true
		case in && line == ")":
			in = false
		case in && line != "":
			mods = append(mods, strings.TrimPrefix(line, "./"))
		case strings.HasPrefix(line, "use ./"):
			mods = append(mods, strings.TrimPrefix(line, "use ./"))
		}
	}
	if len(mods) == 0 {
		t.Fatal("go.work lists no modules")
	}
	return mods
}

func TestModulesTidyOnTheirOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("go mod tidy may consult the module proxy")
	}
	root := repoRoot(t)
	for _, m := range modules(t, root) {
		t.Run(m, func(t *testing.T) {
			cmd := exec.Command("go", "mod", "tidy", "-diff")
			cmd.Dir = filepath.Join(root, m)
			cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("module %s is not tidy on its own; run `cd %s && GOWORK=off go mod tidy`:\n%s", m, m, out)
			}
		})
	}
}

type goMod struct {
	Go      string
	Require []struct {
		Path     string
		Version  string
		Indirect bool
	}
}

func TestOneVersionPerDependency(t *testing.T) {
	root := repoRoot(t)
	versions := map[string]map[string][]string{} // module path -> version -> go.mod folders
	goLines := map[string][]string{}             // go directive -> go.mod folders
	for _, m := range modules(t, root) {
		var gm goMod
		if err := json.Unmarshal(goCmd(t, filepath.Join(root, m), []string{"GOWORK=off"}, "mod", "edit", "-json"), &gm); err != nil {
			t.Fatalf("%s/go.mod: %v", m, err)
		}
		goLines[gm.Go] = append(goLines[gm.Go], m)
		for _, r := range gm.Require {
			if strings.HasPrefix(r.Path, prefix) {
				continue
			}
			if versions[r.Path] == nil {
				versions[r.Path] = map[string][]string{}
			}
			versions[r.Path][r.Version] = append(versions[r.Path][r.Version], m)
		}
	}
	if len(goLines) > 1 {
		t.Errorf("the modules say different go versions: %v; one go line everywhere (go mod edit -go=VERSION)", goLines)
	}
	var paths []string
	for p := range versions {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if len(versions[p]) < 2 {
			continue
		}
		var parts []string
		for v, ms := range versions[p] {
			parts = append(parts, fmt.Sprintf("%s in %s", v, strings.Join(ms, ", ")))
		}
		sort.Strings(parts)
		t.Errorf("%s is required at several versions: %s; require one version everywhere (go get %s@<version> in each module)",
			p, strings.Join(parts, "; "), p)
	}
}
