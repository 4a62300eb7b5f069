// Package hook is the terok-shield-hook OCI hook (docs/shield-hook.md, Invocation): at
// createRuntime it applies the container's pre-generated ruleset inside the
// container's network namespace as one nft transaction, verifies what the
// kernel now holds, fills the gateway sets and starts the per-container
// resolver (docs/shield-resolver.md; dnsmasq for bundles of older tools);
// at poststop it stops it.
//
// Fail closed: every error ends in a non-zero exit, which makes the OCI
// runtime abort the container's creation. Errors go to stderr and, once the
// state directory is validated, to <state_dir>/hook-error.log.
package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/common/version"
	"terok.dev/sandbox/shield-hook/internal/gateway"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/ocistate"
)

// Program is the name used in messages.
const Program = "terok-shield-hook"

// msgPrefix starts every error line (docs/shield-hook.md, Invocation).
const msgPrefix = "terok-shield hook: "

// maxRuleset bounds ruleset.nft (a 100k-entry allowlist is ~2 MB).
const maxRuleset = 32 << 20

// Timing knobs; tests shorten them only through Options.
const (
	defaultGatewayWait     = 5 * time.Second
	defaultGatewayInterval = 50 * time.Millisecond
	defaultDnsmasqWait     = 5 * time.Second
)

// Options are the process-level inputs of one hook run.
type Options struct {
	Args   []string // os.Args
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
	Setenv func(string, string) error

	GatewayWait     time.Duration
	GatewayInterval time.Duration
}

// run carries the state of one invocation.
type run struct {
	opt      Options
	stateDir string // set once validated; enables hook-error.log
	stage    string
	// ann are the OCI state's annotations (the container's name and
	// whether its audit log is on, for closeResolverMarker).
	ann map[string]string
}

// Main runs the hook and returns the process exit status.
func Main(ctx context.Context, opt Options) int {
	if opt.GatewayWait == 0 {
		opt.GatewayWait = defaultGatewayWait
	}
	if opt.GatewayInterval == 0 {
		opt.GatewayInterval = defaultGatewayInterval
	}
	r := &run{opt: opt, stage: shieldbundle.StageCreateRuntime}
	args := opt.Args
	if len(args) > 1 {
		switch args[1] {
		case "--bundle-version", "-bundle-version":
			fmt.Fprintln(opt.Stdout, shieldbundle.BundleVersion)
			return 0
		case "--version", "-version":
			fmt.Fprintln(opt.Stdout, version.String(Program))
			return 0
		case "--help", "-h", "-help":
			fmt.Fprintf(opt.Stdout, "usage: %s [createRuntime|poststop] < OCI-state.json\n       %s --bundle-version | --version\n", Program, Program)
			return 0
		}
		r.stage = args[1]
	}
	if len(args) > 2 {
		return r.fail(fmt.Errorf("unexpected arguments after the stage: %q", args[2:]))
	}
	if r.stage != shieldbundle.StageCreateRuntime && r.stage != shieldbundle.StagePoststop {
		return r.fail(fmt.Errorf("unknown stage '%s'", r.stage))
	}
	r.fixEnv()
	if err := r.main(ctx); err != nil {
		return r.fail(err)
	}
	return 0
}

// fixEnv fills HOME, XDG_RUNTIME_DIR and PATH when the runtime started the
// hook with an (almost) empty environment (docs/shield-hook.md, Invocation).
func (r *run) fixEnv() {
	get, set := r.opt.Getenv, r.opt.Setenv
	if get == nil || set == nil {
		return
	}
	uid := os.Geteuid()
	if get("HOME") == "" {
		home := ""
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			home = u.HomeDir
		}
		if home == "" {
			home = "/home/" + strconv.Itoa(uid)
			if uid == 0 {
				home = "/root"
			}
		}
		_ = set("HOME", home)
	}
	if get("XDG_RUNTIME_DIR") == "" {
		_ = set("XDG_RUNTIME_DIR", "/run/user/"+strconv.Itoa(uid))
	}
	if get("PATH") == "" {
		_ = set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
}

// fail reports err (one event per line in hook-error.log, the full text on
// stderr) and returns exit status 1.
func (r *run) fail(err error) int {
	msg := msgPrefix + err.Error()
	fmt.Fprintln(r.opt.Stderr, msg)
	if r.stateDir != "" {
		if lerr := appendErrorLog(r.stateDir, r.stage, msg); lerr != nil {
			fmt.Fprintln(r.opt.Stderr, msgPrefix+"cannot write hook-error.log: "+lerr.Error())
		}
	}
	return 1
}

// appendErrorLog appends one line to <stateDir>/hook-error.log. O_NOFOLLOW:
// a symlink planted there must not redirect a privileged append.
func appendErrorLog(stateDir, stage, msg string) error {
	path := filepath.Join(stateDir, shieldbundle.FileHookErrorLog)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	line := strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " | ")), " ")
	_, err = fmt.Fprintf(f, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339), stage, line)
	return err
}

func (r *run) main(ctx context.Context) error {
	t := r.timer()
	defer t.report()
	data, err := ocistate.Read(r.opt.Stdin)
	if err != nil {
		return err
	}
	st, err := ocistate.Parse(data)
	if err != nil {
		return err
	}
	dir, err := ocistate.StateDir(st.Annotations)
	if err != nil {
		return err
	}
	r.stateDir = dir
	r.ann = st.Annotations
	if r.stage == shieldbundle.StagePoststop {
		// The end first: the task's bound tokens die before anything else
		// of the container is cleaned up.
		endErr := recordEnd(st.Annotations, st.ID)
		if err := poststop(dir); err != nil {
			return err
		}
		return endErr
	}
	legacy := false
	if err := ocistate.CheckVersion(st.Annotations); err != nil {
		if !ocistate.IsLegacyVersion(st.Annotations) {
			return err
		}
		legacy = true
	}
	if st.Pid == 0 {
		return errors.New("missing pid in OCI state")
	}
	// The informational files (container.id, gateway, gateway_v6) are
	// written in the background while the ruleset is applied; the hook
	// succeeds only once they are written.
	bg := newBackground()
	defer func() { _ = bg.wait() }()
	if st.ID != "" {
		id := st.ID
		if len(id) > 12 {
			id = id[:12]
		}
		if strings.ContainsAny(id, "\n\r\x00/") {
			return fmt.Errorf("bad OCI state: container id %q contains a control character or '/'", id)
		}
		bg.goDo(func() error { return writeRuntimeFile(filepath.Join(dir, shieldbundle.FileContainerID), id+"\n") })
	}
	// The container's init holds its bound tokens from now on
	// (docs/security-model.md, Tokens that die with their task); written
	// before the hook returns, so before the task's first instruction.
	pid := st.Pid
	bg.goDo(func() error { return confirmStart(st.Annotations, pid, st.ID) })
	t.mark("oci state")
	if err := r.createRuntime(ctx, dir, st.Pid, legacy, t, bg); err != nil {
		return err
	}
	err = bg.wait()
	t.mark("wait for state files")
	return err
}

// createRuntime is the hook's first stage (docs/shield-hook.md, What
// createRuntime does), with two reorderings: the gateways are
// discovered before the ruleset is applied so that the table and its
// gateway elements land in the same atomic transaction, and the DNS
// service (the resolver, or dnsmasq for an old bundle) starts concurrently
// with the application instead of after it. The container's process has
// not started at this stage, so nothing runs unfiltered or queries DNS in
// the meantime; any failure makes the hook exit non-zero (and stops the
// service it started).
func (r *run) createRuntime(ctx context.Context, dir string, pid int, legacy bool, t *timer, bg *background) error {
	// nft stays a hard requirement even when the netlink path applies the
	// ruleset: it is the fallback for any ruleset.nft the strict parser
	// does not understand, and `shield rules`/live operations use it.
	nftPath, err := nsexec.LookPath("nft", "/usr/sbin/nft", "/sbin/nft")
	if err != nil {
		return err
	}
	script, err := ocistate.ReadPrivateFile(filepath.Join(dir, shieldbundle.FileRuleset), maxRuleset)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("ruleset.nft not found: %s", filepath.Join(dir, shieldbundle.FileRuleset))
	}
	if err != nil {
		return fmt.Errorf("read ruleset: %w", err)
	}
	if err := checkRulesetDigest(dir, r.ann, script); err != nil {
		return err
	}
	interactive, err := exists(filepath.Join(dir, shieldbundle.FileInteractive))
	if err != nil {
		return err
	}
	// The mode decides which enforcing table ruleset.nft must be: a
	// learn table in an enforce bundle (or the reverse) fails verification.
	mode, err := shieldbundle.ReadMode(dir)
	if err != nil {
		return err
	}
	verify := func(listing string) []string {
		if mode == shieldbundle.ModeLearn {
			return ruleset.VerifyLearn(listing)
		}
		return ruleset.VerifyHook(listing, interactive || mode == shieldbundle.ModeInteractive)
	}
	// A quarantined container stays quarantined when it is restarted: the
	// marker replaces ruleset.nft by the quarantine table (docs/shield.md,
	// Quarantine). ruleset.nft still decides how long to wait for the
	// gateways.
	quarantined, err := exists(filepath.Join(dir, shieldbundle.FileQuarantine))
	if err != nil {
		return err
	}
	table := script
	switch {
	case quarantined:
		table = []byte(ruleset.Quarantine())
	case legacy:
		// A 0.6.5 bundle: its table is repaired before it is applied
		// (docs/shield-hook.md, "Bundles of terok-shield 0.6.5"), and
		// every repair is reported loudly.
		fixed, changes := ruleset.NormalizeLegacy(string(script))
		table = []byte(fixed)
		r.warnLegacy(dir, changes)
	}
	t.mark("read ruleset")
	// The strict parse and the text check (pure CPU, ~1 ms) run while
	// this goroutine opens the namespace, starts the DNS service and
	// discovers the gateways (system calls that mostly wait); apply joins
	// them before it builds the plan, so nothing is applied unchecked.
	// Gosched hands this P to the new goroutine and this one to the other
	// P: without it the parse sat in the run queue until apply blocked on
	// it (BenchmarkHookStages: wait for parse ~1.1 of its ~1.1 ms).
	prep := prepare(table, verify, quarantined || legacy)
	runtime.Gosched()
	ns, err := nsexec.FromPID(pid)
	if err != nil {
		return err
	}
	defer ns.Close()

	nl, err := ns.Netlink()
	if err != nil {
		return err
	}
	defer nl.Close()

	// The container's DNS service (its resolver, or dnsmasq for a bundle
	// of an older tool) starts while the ruleset is applied: its start
	// (fork, exec, a few ms) is independent of the table, and nothing can
	// query it before the container's process runs, which happens only
	// after this hook succeeds. Any failure stops it again.
	startDNS, stopDNS, dnsName, err := dnsService(ctx, ns, dir, pid, r.ann)
	if err != nil {
		return err
	}
	var dnsDone chan error
	var dnsTook time.Duration
	if startDNS != nil {
		// Both bind 127.0.0.1: loopback must be up (done here: the
		// netlink handle is not shared with the goroutine).
		if err := loopbackUp(nl); err != nil {
			return err
		}
		dnsDone = make(chan error, 1)
		go func() {
			start := time.Now()
			err := startDNS()
			dnsTook = time.Since(start)
			dnsDone <- err
		}()
		t.mark("loopback up, " + dnsName + " started")
	}
	// waitDNS joins the start; unless keep, a started service is stopped
	// again (the hook is failing).
	waitDNS := func(keep bool) error {
		if dnsDone == nil {
			return nil
		}
		err := <-dnsDone
		dnsDone = nil
		if err != nil || !keep {
			stopDNS()
		}
		return err
	}
	defer func() { _ = waitDNS(false) }()

	gws, err := gateway.Discover(ctx, nl, GatewayWait(script, r.opt.GatewayWait), r.opt.GatewayInterval)
	if err != nil {
		return fmt.Errorf("gateway discovery: %w", err)
	}
	var gwList []string
	for _, g := range []string{gws.V4, gws.V6} {
		if g != "" {
			gwList = append(gwList, g)
		}
	}
	t.mark("discover gateways")
	bg.goDo(func() error {
		for _, f := range []struct{ name, val string }{{shieldbundle.FileGateway, gws.V4}, {shieldbundle.FileGatewayV6, gws.V6}} {
			path := filepath.Join(dir, f.name)
			if f.val == "" {
				if err := shieldbundle.RemoveIfExists(path); err != nil {
					return err
				}
			} else if err := writeRuntimeFile(path, f.val+"\n"); err != nil {
				return err
			}
		}
		return nil
	})
	if err := r.apply(ctx, ns, nftPath, table, gwList, prep, verify, quarantined, legacy, t); err != nil {
		return err
	}
	if dnsDone != nil {
		if err := waitDNS(true); err != nil {
			return err
		}
		t.mark("wait for " + dnsName)
		t.record(dnsName+" start (parallel)", dnsTook)
	}
	return nil
}

// checkRulesetDigest refuses a ruleset.nft whose bytes are not the ones
// the runner wrote (docs/shield-hook.md, Ruleset digest): with the
// terok.shield.ruleset_digest annotation present, the file's digest must
// be the annotation's or, after a live allow/deny rewrote the file, the
// one in ruleset.nft.sha256. A crash-truncated file could have lost its
// deny elements and still parse, so no digest match means no start.
// Without the annotation (older runners, terok-shield 0.6.5) nothing is
// checked.
func checkRulesetDigest(dir string, ann map[string]string, script []byte) error {
	v, present := ann[shieldbundle.AnnRulesetDigest]
	if !present {
		return nil
	}
	want, err := shieldbundle.ParseRulesetDigest(v)
	if err != nil {
		return fmt.Errorf("bad annotation %s: %w", shieldbundle.AnnRulesetDigest, err)
	}
	got := shieldbundle.RulesetDigest(script)
	if got == want {
		return nil
	}
	live := "none"
	data, err := ocistate.ReadPrivateFile(filepath.Join(dir, shieldbundle.FileRulesetDigest), 256)
	switch {
	case err == nil:
		l := strings.TrimSpace(string(data))
		if _, perr := shieldbundle.ParseRulesetDigest(l); perr != nil {
			live = "unreadable: " + perr.Error()
		} else if l == got {
			return nil
		} else {
			live = l
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		live = "unreadable: " + err.Error()
	}
	return fmt.Errorf("ruleset.nft in %s is not the one terok-sandbox wrote (truncated by a crash, edited or replaced): its digest %s matches neither the launch's (%s annotation %s) nor the last live change's (%s: %s); refusing to start the container. Run the task again with terok-sandbox run, which rewrites the state directory, or remove the container",
		dir, got, shieldbundle.AnnRulesetDigest, want, shieldbundle.FileRulesetDigest, live)
}

// dnsService picks the container's DNS service from the bundle: the
// resolver when dns.tier says so (docs/shield-resolver.md), dnsmasq when
// an older tool wrote dnsmasq.conf, none for the static tiers. It returns
// the start and stop steps and a name for messages and timings.
func dnsService(ctx context.Context, ns *nsexec.NS, dir string, initPID int, ann map[string]string) (start func() error, stop func(), name string, err error) {
	tier, err := shieldbundle.ReadTier(dir)
	if err != nil {
		return nil, nil, "", err
	}
	if tier == shieldbundle.TierResolver {
		// The table this hook applies enforces, so a resolver.open left
		// by a `shield down` before a restart must not open the new
		// resolver (docs/shield-resolver.md, Shield down).
		if err := closeResolverMarker(dir, ann); err != nil {
			return nil, nil, "", err
		}
		return func() error { return startResolver(ns, dir, initPID, ann) },
			func() { stopResolver(dir, 2*time.Second) }, "resolver", nil
	}
	ok, err := exists(filepath.Join(dir, shieldbundle.FileDnsmasqConf))
	if err != nil || !ok {
		return nil, nil, "", err
	}
	return func() error { return startDnsmasq(ctx, ns, dir) },
		func() { stopOurs(dir, 2*time.Second) }, "dnsmasq", nil
}

// apply puts the ruleset in force and verifies it. A ruleset.nft that
// ruleset.ParseScript recovers exactly (what pre-start writes) is applied
// in-process as one netlink transaction and read back over netlink; any
// other text, or a batch too large for the socket, goes through nft -f
// and `nft list` as before. Both paths are one atomic transaction that
// replaces a leftover table, and both fail closed.
//
// The quarantine table always goes the nft way and is verified with
// ruleset.VerifyQuarantine.
func (r *run) apply(ctx context.Context, ns *nsexec.NS, nftPath string, script []byte, gwList []string, prep <-chan prepared, verify func(string) []string, quarantine, legacy bool, t *timer) error {
	p := <-prep
	t.mark("wait for parse")
	t.record("parse and verify text (parallel)", p.took)
	if p.ok && !quarantine && !legacy {
		plan, err := nftnl.NewPlan(p.script, gwList)
		if err == nil {
			// The same invariants VerifyHook checks on the listing, here
			// on the text whose exact meaning the plan carries (checked
			// by the goroutine that parsed it); the read-back below then
			// proves the kernel holds the plan.
			if errs := p.verrs; len(errs) > 0 {
				//lint:ignore ST1005 message text fixed by docs/shield-hook.md, Verification and states
				return fmt.Errorf("Ruleset verification failed: %s", strings.Join(errs, "; "))
			}
			t.mark("plan")
			// The socket is made inside the namespace; the batch and the
			// read-back run on this goroutine (nftnl.OpenIn says why).
			var verrs []string
			err = func() error {
				c, sndbuf, closeFn, err := nftnl.OpenIn(ns)
				if err != nil {
					return err
				}
				defer func() { closeFn(); t.mark("close netlink") }()
				t.mark("open netlink in netns")
				if err := plan.Apply(c, sndbuf); err != nil {
					return err
				}
				t.mark("apply (netlink)")
				verrs, err = plan.Verify(c)
				t.mark("verify (netlink)")
				return err
			}()
			switch {
			case errors.Is(err, nftnl.ErrTooLarge):
				// Nothing was committed; nft splits large batches itself.
			case err != nil:
				return fmt.Errorf("apply ruleset: %w", err)
			case len(verrs) > 0:
				//lint:ignore ST1005 message text fixed by docs/shield-hook.md, Verification and states
				return fmt.Errorf("Ruleset verification failed: %s", strings.Join(verrs, "; "))
			default:
				return nil
			}
		}
	}
	full := Transaction(script, gwList)
	if _, err := ns.Run(ctx, full, nftPath, "-f", "-"); err != nil {
		return fmt.Errorf("apply ruleset: %w", err)
	}
	t.mark("apply (nft -f)")
	// Verify what the kernel now holds. Terse (-t) leaves out set elements:
	// the checks are about chains, hooks, policies and rules, and listing a
	// large allowlist back would double the hook's run time. The elements
	// themselves were committed by the same transaction that succeeded.
	listing, err := ns.Run(ctx, nil, nftPath, "-t", "list", "table", ruleset.Family, ruleset.Table)
	if err != nil {
		return fmt.Errorf("list applied ruleset: %w", err)
	}
	t.mark("verify (nft list)")
	if legacy {
		if errs := ruleset.VerifyLegacy(listing); len(errs) > 0 {
			return fmt.Errorf("0.6.5 bundle: ruleset verification failed: %s", strings.Join(errs, "; "))
		}
		return nil
	}
	if quarantine {
		if errs := ruleset.VerifyQuarantine(listing); len(errs) > 0 {
			return fmt.Errorf("quarantine ruleset verification failed: %s", strings.Join(errs, "; "))
		}
		return nil
	}
	if errs := verify(listing); len(errs) > 0 {
		//lint:ignore ST1005 message text fixed by docs/shield-hook.md, Verification and states
		return fmt.Errorf("Ruleset verification failed: %s", strings.Join(errs, "; "))
	}
	return nil
}

// prepared is what the parsing goroutine of createRuntime hands to apply:
// the strict parse of ruleset.nft (ok false: the nft path) and, when it
// parsed, the text check's findings.
type prepared struct {
	script ruleset.Script
	ok     bool
	verrs  []string
	took   time.Duration
}

// prepare parses script and checks its text on a goroutine of its own;
// the result arrives on the channel. With nftOnly (the quarantine table, a
// 0.6.5 bundle) nothing is parsed and apply takes the nft path.
func prepare(script []byte, verify func(string) []string, nftOnly bool) <-chan prepared {
	prep := make(chan prepared, 1)
	go func() {
		start := time.Now()
		var p prepared
		if !nftOnly {
			p.script, p.ok = ruleset.ParseScript(string(script))
			if p.ok {
				p.verrs = verify(string(script))
			}
		}
		p.took = time.Since(start)
		prep <- p
	}()
	return prep
}

// warnLegacy reports what NormalizeLegacy changed in a 0.6.5 bundle:
// on stderr, as a "warning:" line in hook-error.log and, when the bundle
// audits, as one audit event "compat". The start goes on.
func (r *run) warnLegacy(dir string, changes []string) {
	msg := "warning: started a terok-shield 0.6.5 bundle (version 4) without closed DNS; run the container again with this terok-sandbox for the current ruleset"
	if len(changes) > 0 {
		msg += "; its ruleset was repaired: " + strings.Join(changes, "; ")
	}
	fmt.Fprintln(r.opt.Stderr, msgPrefix+msg)
	if err := appendErrorLog(dir, r.stage, msgPrefix+msg); err != nil {
		fmt.Fprintln(r.opt.Stderr, msgPrefix+"cannot write hook-error.log: "+err.Error())
	}
	if on, _ := strconv.ParseBool(r.ann[shieldbundle.AnnAuditEnabled]); on && r.ann[shieldbundle.AnnName] != "" {
		_ = shieldbundle.AppendAudit(dir, shieldbundle.Event{TS: time.Now().UTC().Format("2006-01-02T15:04:05+00:00"),
			Container: r.ann[shieldbundle.AnnName], Action: "compat", Detail: truncateDetail(msg)})
	}
}

func truncateDetail(s string) string {
	if len(s) > 1000 {
		return s[:1000] + "…"
	}
	return s
}

// GatewayWait is how long to poll for the container's default route. Under
// rootless slirp4netns the route appears only after createRuntime, so
// polling would always run to the deadline; pre-start writes the fixed
// slirp4netns gateway elements into ruleset.nft for exactly that race
// (docs/shield-hook.md, The ruleset, rule by rule), and then one look is enough. Other modes keep polling.
func GatewayWait(rulesetNft []byte, wait time.Duration) time.Duration {
	fixed := ruleset.AddElements(ruleset.KindGateway, []string{ruleset.SlirpGatewayV4}, false)
	if bytes.Contains(rulesetNft, []byte(fixed)) {
		return 0
	}
	return wait
}

// Transaction is the nft script the hook applies: the table is created
// (a no-op when absent) and deleted first, so that a leftover table in the
// namespace is replaced rather than merged into, then the pre-generated
// ruleset, then the discovered gateway elements. nft -f commits the whole
// script as one transaction: either all of it is in force or none of it.
func Transaction(rulesetNft []byte, gateways []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s\ndelete table %s %s\n", ruleset.Family, ruleset.Table, ruleset.Family, ruleset.Table)
	b.Write(rulesetNft)
	if len(rulesetNft) > 0 && rulesetNft[len(rulesetNft)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString(ruleset.AddElements(ruleset.KindGateway, gateways, false))
	return []byte(b.String())
}

// writeRuntimeFile replaces a small informational file (container.id,
// gateway, gateway_v6) atomically: temp file in the same directory, then
// rename. No fsync: these describe the running container and are rewritten
// at every start, and three fsyncs would dominate the hook's run time.
func writeRuntimeFile(path, content string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.WriteString(content); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
