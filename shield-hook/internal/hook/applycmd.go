package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// ApplyMain is `terok-shield-hook apply-ruleset --mode=MODE`
// (shieldbundle.ApplySubcommand): the ruleset on stdin, a table the
// runner rendered (a leading `delete table` of ruleset.Replace is
// dropped: the netlink batch replaces a leftover table itself), is put in
// force in the calling process's network namespace exactly as the
// createRuntime hook does it, and verified with the checks of MODE
// (interactive, enforce or learn). It prints nothing on success and
// returns the exit status: 0, 1 on any failure (nothing changed unless
// the transaction committed and verification then failed), 2 on a usage
// error.
func ApplyMain(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) int {
	r := &run{opt: Options{Stderr: stderr}, stage: shieldbundle.ApplySubcommand}
	if len(args) != 3 || args[1] != shieldbundle.ApplySubcommand || !strings.HasPrefix(args[2], "--mode=") {
		fmt.Fprintf(stderr, "usage: %s %s --mode=enforce|learn|interactive < ruleset.nft\n", Program, shieldbundle.ApplySubcommand)
		return 2
	}
	mode, err := shieldbundle.ParseMode(strings.TrimPrefix(args[2], "--mode="))
	if err != nil {
		fmt.Fprintln(stderr, msgPrefix+err.Error())
		return 2
	}
	if err := applyHere(ctx, stdin, mode); err != nil {
		return r.fail(err)
	}
	return 0
}

func applyHere(ctx context.Context, stdin io.Reader, mode string) error {
	data, err := io.ReadAll(io.LimitReader(stdin, maxRuleset+1))
	if err != nil {
		return fmt.Errorf("read ruleset: %w", err)
	}
	if len(data) > maxRuleset {
		return fmt.Errorf("ruleset larger than %d bytes", maxRuleset)
	}
	script := []byte(strings.TrimPrefix(string(data), "delete table "+ruleset.Family+" "+ruleset.Table+"\n"))
	if len(script) == 0 {
		return errors.New("empty ruleset on stdin")
	}
	nftPath, err := nsexec.LookPath("nft", "/usr/sbin/nft", "/sbin/nft")
	if err != nil {
		return err
	}
	ns, err := nsexec.FromPath("/proc/self/ns/net")
	if err != nil {
		return err
	}
	defer ns.Close()
	verify := func(listing string) []string {
		if mode == shieldbundle.ModeLearn {
			return ruleset.VerifyLearn(listing)
		}
		return ruleset.VerifyHook(listing, mode == shieldbundle.ModeInteractive)
	}
	r := &run{stage: shieldbundle.ApplySubcommand}
	return r.apply(ctx, ns, nftPath, script, nil, prepare(script, verify, false), verify, false, false, nil)
}
