package gitgate_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/gitgate"
)

// git runs git in dir with a fixed identity and no user or system config.
func git(dir string, args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.org",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.org")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %v: %v: %s", args, err, out)
	}
	return nil
}

// upstream makes a local repository with one commit on main.
func upstream(dir string) error {
	for _, a := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "first"}} {
		if err := git(dir, a...); err != nil {
			return err
		}
	}
	return nil
}

// A project's mirror: created from the upstream, compared with it, and
// compared again after the upstream moved on.
func Example() {
	root, err := os.MkdirTemp("", "gitgate-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(root)
	up := filepath.Join(root, "upstream")
	if err := os.Mkdir(up, 0o700); err != nil || upstream(up) != nil {
		fmt.Println("upstream:", err)
		return
	}
	cfg := config.Config{StateDir: filepath.Join(root, "state"), CredentialsDir: filepath.Join(root, "credentials")}
	env := append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	g, err := gitgate.New(cfg, gitgate.Options{Project: "demo", UpstreamURL: up, DefaultBranch: "main", Environ: env})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	res, err := g.Sync(ctx, gitgate.SyncOptions{})
	fmt.Println("created:", res.Created, "success:", res.Success, "err:", err)
	fmt.Println("last commit:", g.LastCommit(ctx).Message)
	fmt.Println("stale:", g.CompareWithUpstream(ctx, "").IsStale)

	if err := git(up, "commit", "-q", "--allow-empty", "-m", "second"); err != nil {
		fmt.Println(err)
		return
	}
	// The upstream head is not in the mirror yet: the counts stay unknown.
	st := g.CompareWithUpstream(ctx, "main")
	fmt.Println("stale:", st.IsStale, "counts known:", st.CommitsBehind != nil)

	res = g.SyncBranches(ctx, []string{"main"})
	fmt.Println("updated:", res.UpdatedBranches, "last commit:", g.LastCommit(ctx).Message)
	fmt.Println("stale:", g.CompareWithUpstream(ctx, "main").IsStale)

	// Again into the existing mirror, then from scratch.
	res, err = g.Sync(ctx, gitgate.SyncOptions{Branches: []string{"main"}})
	fmt.Println("created:", res.Created, "err:", err)
	res, err = g.Sync(ctx, gitgate.SyncOptions{Branches: []string{"main"}, ForceReinit: true})
	fmt.Println("created:", res.Created, "err:", err, "last commit:", g.LastCommit(ctx).Message)
	// Output:
	// created: true success: true err: <nil>
	// last commit: first
	// stale: false
	// stale: true counts known: false
	// updated: [main] last commit: second
	// stale: false
	// created: false err: <nil>
	// created: true err: <nil> last commit: second
}

// Sync without an upstream URL is ErrNoUpstream.
func ExampleGate_Sync_noUpstream() {
	root, _ := os.MkdirTemp("", "gitgate-example-")
	defer os.RemoveAll(root)
	g, _ := gitgate.New(config.Config{StateDir: root}, gitgate.Options{Project: "demo"})
	_, err := g.Sync(context.Background(), gitgate.SyncOptions{})
	fmt.Println(err == gitgate.ErrNoUpstream)
	_, err = gitgate.New(config.Config{StateDir: root}, gitgate.Options{Project: "../etc"})
	fmt.Println(err != nil)
	// Output:
	// true
	// true
}
