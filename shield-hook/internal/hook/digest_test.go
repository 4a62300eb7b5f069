package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// digestBundle is a state directory holding the ruleset.nft pre-start
// would write; it returns the directory and the file's bytes.
func digestBundle(t *testing.T) (string, []byte) {
	t.Helper()
	text, _, err := ruleset.Script{
		Options: ruleset.Options{DNS: ruleset.SlirpDNS},
		Deny:    []string{"198.51.100.7", "203.0.113.0/24"},
	}.Render()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRuleset), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, []byte(text)
}

// The ruleset digest (docs/shield-hook.md, Ruleset digest): the launch's
// annotation or the last live change's ruleset.nft.sha256 must name the
// digest of the exact bytes; a truncated, edited or replaced file is
// refused with the message that says what to do; no annotation, no check.
func TestCheckRulesetDigest(t *testing.T) {
	dir, script := digestBundle(t)
	launch := shieldbundle.RulesetDigest(script)
	ann := map[string]string{shieldbundle.AnnRulesetDigest: launch}
	// The deny elements are at the end: a file cut before them still
	// parses (what the digest is for).
	cut := bytes.Index(script, []byte("198.51.100.7"))
	if cut < 0 {
		t.Fatalf("deny element not in the rendered ruleset:\n%s", script)
	}
	truncated := script[:cut]
	edited := bytes.Replace(script, []byte("198.51.100.7"), []byte("198.51.100.8"), 1)
	writeLive := func(content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRulesetDigest), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(t *testing.T, ann map[string]string, data []byte, want ...string) {
		t.Helper()
		err := checkRulesetDigest(dir, ann, data)
		if err == nil {
			t.Fatal("accepted")
		}
		for _, w := range append([]string{"ruleset.nft in " + dir + " is not the one terok-sandbox wrote", "refusing to start", "terok-sandbox run"}, want...) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	}

	t.Run("match", func(t *testing.T) {
		if err := checkRulesetDigest(dir, ann, script); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("absent annotation", func(t *testing.T) {
		for _, data := range [][]byte{script, truncated, nil} {
			if err := checkRulesetDigest(dir, map[string]string{shieldbundle.AnnVersion: "4"}, data); err != nil {
				t.Fatalf("no annotation, %d bytes: %v", len(data), err)
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		refused(t, ann, truncated, shieldbundle.RulesetDigest(truncated), launch, "ruleset.nft.sha256: none")
		refused(t, ann, nil, shieldbundle.RulesetDigest(nil))
	})
	t.Run("edited", func(t *testing.T) {
		refused(t, ann, edited, shieldbundle.RulesetDigest(edited))
	})
	t.Run("bad annotation", func(t *testing.T) {
		for _, v := range []string{"", "sha256:zz", strings.ToUpper(launch)} {
			err := checkRulesetDigest(dir, map[string]string{shieldbundle.AnnRulesetDigest: v}, script)
			if err == nil || !strings.Contains(err.Error(), "bad annotation "+shieldbundle.AnnRulesetDigest) {
				t.Errorf("annotation %q: %v", v, err)
			}
		}
	})
	t.Run("live change", func(t *testing.T) {
		writeLive(shieldbundle.RulesetDigest(edited) + "\n")
		if err := checkRulesetDigest(dir, ann, edited); err != nil {
			t.Fatalf("the live change's ruleset: %v", err)
		}
		if err := checkRulesetDigest(dir, ann, script); err != nil {
			t.Fatalf("the launch's ruleset with a live digest present: %v", err)
		}
		refused(t, ann, truncated, "ruleset.nft.sha256: "+shieldbundle.RulesetDigest(edited))
	})
	t.Run("live digest truncated", func(t *testing.T) {
		writeLive(shieldbundle.RulesetDigest(edited)[:20])
		refused(t, ann, edited, "ruleset.nft.sha256: unreadable")
	})
	t.Run("live digest not a regular file", func(t *testing.T) {
		p := filepath.Join(dir, shieldbundle.FileRulesetDigest)
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(t.TempDir(), "digest")
		if err := os.WriteFile(other, []byte(shieldbundle.RulesetDigest(edited)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(other, p); err != nil {
			t.Fatal(err)
		}
		refused(t, ann, edited, "ruleset.nft.sha256: unreadable")
	})
}

// The whole createRuntime refuses a truncated ruleset.nft before it
// enters any namespace: exit 1, the message on stderr and in
// hook-error.log.
func TestMainRefusesTruncatedRuleset(t *testing.T) {
	t.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft on this host: createRuntime requires it before reading ruleset.nft")
	}
	dir, script := digestBundle(t)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, shieldbundle.FileRuleset), script[:len(script)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	state, err := json.Marshal(map[string]any{
		"ociVersion": "1.0.2", "id": "0123456789abcdef0123", "status": "created", "pid": os.Getpid(), "bundle": "/nonexistent",
		"annotations": map[string]string{
			shieldbundle.AnnProfiles:      "dev-standard",
			shieldbundle.AnnStateDir:      dir,
			shieldbundle.AnnVersion:       strconv.Itoa(shieldbundle.BundleVersion),
			shieldbundle.AnnRulesetDigest: shieldbundle.RulesetDigest(script),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), Options{Args: []string{Program, shieldbundle.StageCreateRuntime}, Stdin: bytes.NewReader(state), Stdout: &stdout, Stderr: &stderr})
	if code != 1 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	const want = "is not the one terok-sandbox wrote"
	if !strings.Contains(stderr.String(), msgPrefix) || !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr %q lacks %q", stderr.String(), want)
	}
	log, err := os.ReadFile(filepath.Join(dir, shieldbundle.FileHookErrorLog))
	if err != nil || !strings.Contains(string(log), want) {
		t.Fatalf("hook-error.log %q %v", log, err)
	}
}
