package shield

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// nftFallbacks are tried when nft is not on the path (shield.md §11.1).
var nftFallbacks = []string{"/usr/sbin/nft", "/sbin/nft"}

// errNotRunning: the container has no process (exited, or removed).
var errNotRunning = errors.New("container is not running")

// nsenterTimeout bounds every command run in a container netns (§9.7).
const nsenterTimeout = 30 * time.Second

// Live states (shield.md §8).
const (
	StateInactive = string(ruleset.StateInactive)
	StateUp       = string(ruleset.StateUp)
	StateDown     = string(ruleset.StateDown)
	StateDownAll  = string(ruleset.StateDownAll)
	StateError    = string(ruleset.StateError)
)

func (s *Shield) nftPath() (string, error) {
	if p := s.opts.Tools.LookPath("nft", nftFallbacks...); p != "" {
		return p, nil
	}
	return "", errors.New("nft not found: install nftables (e.g. apt-get install nftables) to use the shield")
}

// ContainerPID returns the PID of a running container.
func (s *Shield) ContainerPID(ctx context.Context, container string) (int, error) {
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, "", s.podmanPath(), "inspect", "--format", "{{.State.Pid}}", "--", container)
	if err != nil {
		return 0, fmt.Errorf("podman inspect %s: %w", container, err)
	}
	if res.Code != 0 {
		if strings.Contains(strings.ToLower(res.Combined()), "no such") {
			return 0, fmt.Errorf("container %s: %w", container, errNotRunning)
		}
		return 0, fmt.Errorf("podman inspect %s failed (exit %d): %s", container, res.Code, res.Combined())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
	if err != nil {
		return 0, fmt.Errorf("podman inspect %s: unexpected PID %q", container, strings.TrimSpace(res.Stdout))
	}
	if pid <= 0 {
		return 0, fmt.Errorf("container %s: %w", container, errNotRunning)
	}
	return pid, nil
}

// inNetns runs argv inside the network namespace of pid: directly through
// nsenter as root, through `podman unshare nsenter` otherwise (§11.1).
func (s *Shield) inNetns(ctx context.Context, pid int, stdin string, argv ...string) (Result, error) {
	nsenter := s.opts.Tools.LookPath("nsenter", "/usr/bin/nsenter")
	if nsenter == "" {
		return Result{}, errors.New("nsenter not found: install util-linux")
	}
	cmd := append([]string{nsenter, "-t", strconv.Itoa(pid), "-n", "--"}, argv...)
	if s.opts.EUID != 0 {
		cmd = append([]string{s.podmanPath(), "unshare"}, cmd...)
	}
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, stdin, cmd...)
	shown := strings.Join(argv, " ")
	if errors.Is(err, errTimeout) {
		return res, fmt.Errorf("nsenter command timed out after 30 s: cmd=%s", shown)
	}
	if err != nil {
		return res, err
	}
	if res.Code != 0 {
		out := res.Combined()
		if out == "" {
			return res, fmt.Errorf("nsenter command failed (exit %d) cmd=%s (no output)", res.Code, shown)
		}
		return res, fmt.Errorf("nsenter command failed (exit %d) cmd=%s:\n%s", res.Code, shown, out)
	}
	return res, nil
}

// nft runs nft with args (and an optional script on stdin) in the netns.
func (s *Shield) nft(ctx context.Context, pid int, script string, args ...string) (string, error) {
	nft, err := s.nftPath()
	if err != nil {
		return "", err
	}
	res, err := s.inNetns(ctx, pid, script, append([]string{nft}, args...)...)
	return res.Stdout, err
}

func (s *Shield) nftScript(ctx context.Context, pid int, script string) error {
	_, err := s.nft(ctx, pid, script, "-f", "-")
	return err
}

// liveTable returns `nft list table inet terok_shield`, "" on any failure.
func (s *Shield) liveTable(ctx context.Context, pid int) string {
	out, err := s.nft(ctx, pid, "", "list", "table", "inet", "terok_shield")
	if err != nil {
		return ""
	}
	return out
}

// stateDir is the resolved state directory of this shield.
func (s *Shield) stateDir() (string, error) {
	d, err := resolveDir(s.cfg.StateDir)
	if err != nil {
		return "", fmt.Errorf("resolve shield state directory %s: %w", s.cfg.StateDir, err)
	}
	st, err := os.Stat(d)
	if err != nil || !st.IsDir() {
		return "", fmt.Errorf("shield state directory %s does not exist: was the container started with the shield?", d)
	}
	return d, nil
}

func (s *Shield) path(dir, name string) string { return filepath.Join(dir, name) }

func readTrim(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

func (s *Shield) tier(dir string) string { return readTrim(s.path(dir, shieldbundle.FileDNSTier)) }

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func setFor(kind, addr string) string {
	if ruleset.IsIPv6(addr) {
		return kind + "_v6"
	}
	return kind + "_v4"
}

// expectedMissing is nft's complaint when deleting an absent element.
func expectedMissing(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "no such file") || strings.Contains(m, "element does not exist") || strings.Contains(m, "not in set")
}

// parseTarget splits an allow/deny target into an address or a domain.
func ParseTarget(target string) (addr, domain string, err error) {
	t := strings.TrimSpace(target)
	if t == "" {
		return "", "", errors.New("empty target: give an IP address, a CIDR or a domain")
	}
	if c, err := CanonicalAddr(t); err == nil {
		return c, "", nil
	}
	if strings.ContainsAny(t, "/:") || isAllDigitsAndDots(t) {
		return "", "", specErrorf("Invalid IP/CIDR: '%s'", truncate(t, 80))
	}
	if d, ok := NormalizeDomain(t); ok {
		return "", d, nil
	}
	return "", "", fmt.Errorf("invalid target %q: not an IP address, CIDR or domain name", truncate(t, 80))
}

func isAllDigitsAndDots(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

// resolveTarget returns the addresses a target stands for.
func (s *Shield) resolveTarget(ctx context.Context, target string) (ips []string, domain string, err error) {
	addr, domain, err := ParseTarget(target)
	if err != nil {
		return nil, "", err
	}
	if addr != "" {
		return []string{addr}, "", nil
	}
	return s.opts.Tools.Resolve(ctx, s.opts.Log, []string{domain}), domain, nil
}

// Allow implements shield.md §11.2 and returns the allowed addresses.
func (s *Shield) Allow(ctx context.Context, container, target string) ([]string, error) {
	return s.applyTarget(ctx, container, target, "allow", "allowed", s.allowIP,
		func(ctx context.Context, dir string, pid int, domain string, ok []string) error {
			if len(ok) == 0 {
				return nil
			}
			return s.allowDomain(ctx, dir, pid, domain)
		})
}

// applyTarget is the common path of Allow and Deny: resolve the target, act
// on each address in the running container (a failing address is logged
// and skipped), audit each success, then the domain step, then persist the
// ruleset for restarts.
func (s *Shield) applyTarget(ctx context.Context, container, target, verb, action string,
	perIP func(ctx context.Context, dir string, pid int, ip string) error,
	perDomain func(ctx context.Context, dir string, pid int, domain string, ok []string) error) ([]string, error) {
	dir, err := s.stateDir()
	if err != nil {
		return nil, err
	}
	ips, domain, err := s.resolveTarget(ctx, target)
	if err != nil {
		return nil, err
	}
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return nil, err
	}
	var ok []string
	for _, ip := range ips {
		if err := perIP(ctx, dir, pid, ip); err != nil {
			s.warn("could not "+verb+" address", "container", container, "address", ip, "error", err)
			continue
		}
		ok = append(ok, ip)
		s.audit(container, action, ip, "target="+strings.TrimSpace(target))
	}
	if domain != "" {
		if err := perDomain(ctx, dir, pid, domain, ok); err != nil {
			return ok, err
		}
	}
	return ok, s.refreshBundleRuleset(dir)
}

// refreshBundleRuleset rewrites ruleset.nft from the current lists, so a
// container restarted by podman (the global hook applies ruleset.nft again)
// keeps its live allows and, above all, its denies.
func (s *Shield) refreshBundleRuleset(dir string) error {
	dns := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS))
	if dns == "" {
		return errors.New("cannot persist the change for restarts: upstream DNS not persisted in state")
	}
	tier := s.tier(dir)
	sc := ruleset.Script{
		Options:   s.rulesetOptions(dns, tier, exists(s.path(dir, shieldbundle.FileInteractive))),
		Permanent: tier == TierDnsmasq,
	}
	if dns == ruleset.SlirpDNS {
		sc.Gateways = ruleset.SlirpGateways()
	}
	var err error
	if sc.Allow, err = shieldbundle.EffectiveAllowlist(dir); err != nil {
		return fmt.Errorf("read allowlists: %w", err)
	}
	if sc.Deny, err = shieldbundle.ReadIPFile(s.path(dir, shieldbundle.FileDenyList)); err != nil {
		return fmt.Errorf("read deny list: %w", err)
	}
	text, _, err := sc.Render()
	if err != nil {
		return fmt.Errorf("render ruleset: %w", err)
	}
	return writeFile(dir, shieldbundle.FileRuleset, text)
}

func (s *Shield) allowIP(ctx context.Context, dir string, pid int, ip string) error {
	ip, err := CanonicalAddr(ip)
	if err != nil {
		return err
	}
	denyList := s.path(dir, shieldbundle.FileDenyList)
	denied, err := shieldbundle.ReadIPFile(denyList)
	if err != nil {
		return fmt.Errorf("read deny list: %w", err)
	}
	for _, d := range denied {
		if d == ip {
			if _, err := shieldbundle.RemoveLine(denyList, ip, true); err != nil {
				return fmt.Errorf("update deny list: %w", err)
			}
			if err := s.nftScript(ctx, pid, ruleset.DeleteElements("deny", []string{ip})); err != nil && !expectedMissing(err) {
				s.warn("could not remove address from the live deny set", "address", ip, "error", err)
			}
		}
	}
	if err := s.addElement(ctx, pid, "allow", ip, s.tier(dir) == TierDnsmasq); err != nil {
		return err
	}
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileLiveAllowed), ip); err != nil {
		return fmt.Errorf("persist allowed address: %w", err)
	}
	return nil
}

func (s *Shield) allowDomain(ctx context.Context, dir string, pid int, domain string) error {
	tier := s.tier(dir)
	if tier != "" && tier != TierDnsmasq {
		return nil
	}
	d, ok := NormalizeDomain(domain)
	if !ok {
		return fmt.Errorf("invalid domain %q", domain)
	}
	eff, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	for _, e := range eff {
		if e == d {
			return nil
		}
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileDeniedDomains), d, false); err != nil {
		return fmt.Errorf("update denied domains: %w", err)
	}
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileLiveDomains), d); err != nil {
		return fmt.Errorf("persist allowed domain: %w", err)
	}
	return s.ReconfigureDnsmasq(ctx, dir, pid)
}

// Deny implements shield.md §11.3 and returns the denied addresses.
func (s *Shield) Deny(ctx context.Context, container, target string) ([]string, error) {
	return s.applyTarget(ctx, container, target, "deny", "denied", s.denyIP,
		func(ctx context.Context, dir string, pid int, domain string, _ []string) error {
			return s.denyDomain(ctx, dir, pid, domain)
		})
}

func (s *Shield) denyIP(ctx context.Context, dir string, pid int, ip string) error {
	ip, err := CanonicalAddr(ip)
	if err != nil {
		return err
	}
	// Persist when a rebuild could allow the address again: it lies in an
	// allowed entry (exactly, or inside a range — stricter than the spec's
	// exact match, so a deny inside an allowed CIDR survives a restart).
	before, err := shieldbundle.EffectiveAllowlist(dir)
	if err != nil {
		return fmt.Errorf("read allowlists: %w", err)
	}
	persist := coveredBy(ip, withoutLine(before, ip)) != ""
	if err := s.nftScript(ctx, pid, ruleset.DeleteElements("allow", []string{ip})); err != nil && !expectedMissing(err) {
		s.warn("could not remove address from the live allow set", "address", ip, "error", err)
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileLiveAllowed), ip, false); err != nil {
		return fmt.Errorf("update live allowlist: %w", err)
	}
	addErr := s.addElement(ctx, pid, "deny", ip, false)
	if addErr != nil {
		s.warn("could not add address to the live deny set", "address", ip, "error", addErr)
	}
	persist = persist || exists(s.path(dir, shieldbundle.FileInteractive)) || s.tier(dir) == TierDnsmasq
	if !persist {
		prof, err := shieldbundle.ReadIPFile(s.path(dir, shieldbundle.FileProfileAllowed))
		if err != nil {
			return fmt.Errorf("read profile allowlist: %w", err)
		}
		for _, p := range prof {
			if p == ip {
				persist = true
				break
			}
		}
	}
	if persist {
		if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileDenyList), ip); err != nil {
			return fmt.Errorf("persist denied address: %w", err)
		}
	}
	// The address must be blocked now: if the deny element could not be
	// added, only a verified absence from every allow entry makes it so.
	if addErr != nil {
		eff, err := shieldbundle.EffectiveAllowlist(dir)
		if err != nil || coveredBy(ip, eff) != "" {
			return fmt.Errorf("address %s is still allowed (inside an allowed range) and could not be added to the deny set: %w", ip, addErr)
		}
	}
	return nil
}

func (s *Shield) denyDomain(ctx context.Context, dir string, pid int, domain string) error {
	if s.tier(dir) != TierDnsmasq {
		return nil
	}
	d, ok := NormalizeDomain(domain)
	if !ok {
		return fmt.Errorf("invalid domain %q", domain)
	}
	eff, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	found := false
	for _, e := range eff {
		if e == d {
			found = true
		}
	}
	if !found {
		return nil
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileLiveDomains), d, false); err != nil {
		return fmt.Errorf("update live domains: %w", err)
	}
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileDeniedDomains), d); err != nil {
		return fmt.Errorf("persist denied domain: %w", err)
	}
	return s.ReconfigureDnsmasq(ctx, dir, pid)
}

// ReconfigureDnsmasq regenerates dnsmasq.conf and restarts the container's
// dnsmasq (shield.md §10): dnsmasq does not re-read its configuration on
// SIGHUP, so new nftset= lines only take effect in a new process.
func (s *Shield) ReconfigureDnsmasq(ctx context.Context, dir string, containerPID int) error {
	upstream := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS))
	if upstream == "" {
		return specErrorf("Cannot reload dnsmasq: upstream DNS not persisted in state")
	}
	domains, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	conf, err := shieldbundle.DnsmasqConf(upstream, dir, domains, os.Getpid(), func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("render dnsmasq.conf: %w", err)
	}
	if err := writeFile(dir, shieldbundle.FileDnsmasqConf, string(conf)); err != nil {
		return err
	}
	pidFile := s.path(dir, shieldbundle.FileDnsmasqPID)
	if !exists(pidFile) {
		return nil
	}
	pid, err := shieldbundle.ReadPIDFile(pidFile)
	if err != nil || pid <= 0 {
		_ = os.Remove(pidFile)
		return specErrorf("unreadable %s — container DNS is broken. Restart the container to recover.", pidFile)
	}
	if !processAlive(pid) {
		return specErrorf("dnsmasq (pid %d) is dead — container DNS is broken. Restart the container to recover.", pid)
	}
	if !shieldbundle.IsOurDnsmasq(pid, dir) {
		_ = os.Remove(pidFile)
		return specErrorf("PID %d is not dnsmasq (stale PID file) — container DNS is broken. Restart the container to recover.", pid)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(ctx, pid, 5*time.Second) {
		return specErrorf("dnsmasq (pid %d) did not exit after SIGTERM; container DNS still uses the old allowlist. Restart the container to recover.", pid)
	}
	_ = os.Remove(pidFile)
	dnsmasq := s.opts.Tools.LookPath("dnsmasq", "/usr/sbin/dnsmasq")
	if dnsmasq == "" {
		return specErrorf("dnsmasq not found: container DNS is broken. Install dnsmasq and restart the container.")
	}
	argv := append([]string{dnsmasq}, shieldbundle.DnsmasqArgs(dir)...)
	if _, err := s.inNetns(ctx, containerPID, "", argv...); err != nil {
		return specErrorf("restart dnsmasq: %w — container DNS is broken. Restart the container to recover.", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p, err := shieldbundle.ReadPIDFile(pidFile); err == nil && p > 0 && p != pid {
			return nil
		}
		if time.Now().After(deadline) {
			return specErrorf("dnsmasq did not write %s after restart — container DNS is broken. Restart the container to recover.", pidFile)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// processAlive: the process exists and is not a zombie.
func processAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// liveDNS is the DNS forwarder for rebuilding rules (§11.4 step 2).
func (s *Shield) liveDNS(ctx context.Context, dir, container string, pid int) (string, error) {
	if d := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS)); d != "" {
		return d, nil
	}
	var data string
	if s.opts.EUID == 0 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/root/etc/resolv.conf")
		if err == nil {
			data = string(b)
		}
	} else {
		res, err := s.opts.Tools.Run(ctx, nsenterTimeout, "", s.podmanPath(), "unshare", "cat", "/proc/"+strconv.Itoa(pid)+"/root/etc/resolv.conf")
		if err == nil && res.Code == 0 {
			data = res.Stdout
		}
	}
	for _, l := range strings.Split(data, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" {
			return f[1], nil
		}
	}
	return "", specErrorf("Cannot determine DNS for container %s: no nameserver in resolv.conf", container)
}

// liveGateways are the gateway elements for a rebuilt ruleset: the ones the
// hook discovered plus the slirp4netns defaults.
func (s *Shield) liveGateways(dir, dns string) []string {
	var gw []string
	for _, f := range []string{shieldbundle.FileGateway, shieldbundle.FileGatewayV6} {
		if g := readTrim(s.path(dir, f)); g != "" {
			if c, err := CanonicalAddr(g); err == nil {
				gw = append(gw, c)
			}
		}
	}
	if dns == ruleset.SlirpDNS {
		for _, g := range ruleset.SlirpGateways() {
			dup := false
			for _, e := range gw {
				dup = dup || e == g
			}
			if !dup {
				gw = append(gw, g)
			}
		}
	}
	return gw
}

// buildLive renders the ruleset Up/Down/Preview apply.
func (s *Shield) buildLive(dir, dns string, down, allowAll bool) (string, error) {
	tier := s.tier(dir)
	interactive := exists(s.path(dir, shieldbundle.FileInteractive))
	sc := ruleset.Script{
		Options:  s.rulesetOptions(dns, tier, interactive),
		Bypass:   down,
		AllowAll: allowAll,
		Gateways: s.liveGateways(dir, dns),
	}
	if !down {
		allow, err := shieldbundle.EffectiveAllowlist(dir)
		if err != nil {
			return "", fmt.Errorf("read allowlists: %w", err)
		}
		deny, err := shieldbundle.ReadIPFile(s.path(dir, shieldbundle.FileDenyList))
		if err != nil {
			return "", fmt.Errorf("read deny list: %w", err)
		}
		sc.Allow, sc.Deny, sc.Permanent = allow, deny, tier == TierDnsmasq
	}
	text, skipped, err := sc.Render()
	for _, sk := range skipped {
		s.warn("skipping invalid address in the allow/deny lists", "entry", truncate(sk, 80), "dir", dir)
	}
	return text, err
}

// Up re-applies the enforcing ruleset (shield.md §11.4).
func (s *Shield) Up(ctx context.Context, container string) error {
	return s.switchMode(ctx, container, false, false)
}

// Down applies the bypass ruleset (shield.md §11.5).
func (s *Shield) Down(ctx context.Context, container string, allowAll bool) error {
	return s.switchMode(ctx, container, true, allowAll)
}

func (s *Shield) switchMode(ctx context.Context, container string, down, allowAll bool) error {
	dir, err := s.stateDir()
	if err != nil {
		return err
	}
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return err
	}
	dns, err := s.liveDNS(ctx, dir, container, pid)
	if err != nil {
		return err
	}
	text, err := s.buildLive(dir, dns, down, allowAll)
	if err != nil {
		return err
	}
	script := ruleset.Replace(s.liveTable(ctx, pid) != "", text)
	if err := s.nftScript(ctx, pid, script); err != nil {
		return fmt.Errorf("apply ruleset to %s: %w", container, err)
	}
	listed, err := s.nft(ctx, pid, "", "list", "ruleset")
	if err != nil {
		return fmt.Errorf("list ruleset of %s: %w", container, err)
	}
	if down {
		if errs := ruleset.VerifyBypass(listed, allowAll); len(errs) > 0 {
			return specErrorf("Bypass ruleset verification failed: %s", strings.Join(errs, "; "))
		}
		detail := ""
		if allowAll {
			detail = "allow_all=True"
		}
		s.audit(container, "shield_down", "", detail)
		return nil
	}
	if errs := ruleset.VerifyHook(listed, exists(s.path(dir, shieldbundle.FileInteractive))); len(errs) > 0 {
		return specErrorf("Ruleset verification failed: %s", strings.Join(errs, "; "))
	}
	s.audit(container, "shield_up", "", "")
	return nil
}

// State classifies the live ruleset (shield.md §8); never fails.
func (s *Shield) State(ctx context.Context, container string) string {
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return StateInactive
	}
	return string(ruleset.Classify(s.liveTable(ctx, pid)))
}

// Rules is the live table text ("" when there is none).
func (s *Shield) Rules(ctx context.Context, container string) string {
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return ""
	}
	return s.liveTable(ctx, pid)
}

// Preview renders the ruleset Up (or Down) would apply, without applying.
func (s *Shield) Preview(down, allowAll bool) (string, error) {
	if allowAll && !down {
		return "", errors.New("--all requires --down")
	}
	dir, err := s.stateDir()
	if err != nil {
		return "", err
	}
	dns := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS))
	if dns == "" {
		return "", errors.New("upstream DNS not persisted in state: start the container with the shield first")
	}
	return s.buildLive(dir, dns, down, allowAll)
}

// AuditTail returns the last n audit events of this container's state dir.
func (s *Shield) AuditTail(n int) ([]shieldbundle.Event, error) {
	dir, err := s.stateDir()
	if err != nil {
		return nil, err
	}
	return shieldbundle.TailAudit(dir, n)
}

// addElement puts addr into the live kind set ("allow" or "deny") so that
// it takes effect at once, coping with nft's interval sets, which refuse
// overlapping elements: an address already inside a live element is left
// alone (it is covered), elements inside a new range are replaced by it,
// and an exact element is deleted and re-added in the same transaction so
// a dnsmasq-learned 30-minute timeout becomes permanent.
func (s *Shield) addElement(ctx context.Context, pid int, kind, addr string, permanent bool) error {
	set := setFor(kind, addr)
	out, err := s.nft(ctx, pid, "", "list", "set", "inet", "terok_shield", set)
	if err != nil {
		return fmt.Errorf("read live set %s: %w", set, err)
	}
	elems := parseSetElements(out)
	if c := coveredBy(addr, elems); c != "" && c != addr {
		return nil
	}
	var del []string
	for _, e := range elems {
		if e == addr || coveredBy(e, []string{addr}) != "" {
			del = append(del, e)
		}
	}
	script := ""
	if len(del) > 0 {
		script = ruleset.DeleteElements(kind, del)
	}
	script += ruleset.AddElements(kind, []string{addr}, permanent)
	return s.nftScript(ctx, pid, script)
}

// parseSetElements extracts the addresses and prefixes of `nft list set`
// output (the "elements = { ... }" block; per-element options such as
// timeouts are dropped).
func parseSetElements(text string) []string {
	i := strings.Index(text, "elements = {")
	if i < 0 {
		return nil
	}
	body := text[i+len("elements = {"):]
	if j := strings.IndexByte(body, '}'); j >= 0 {
		body = body[:j]
	}
	var out []string
	for _, item := range strings.Split(body, ",") {
		f := strings.Fields(item)
		if len(f) == 0 {
			continue
		}
		if c, err := CanonicalAddr(f[0]); err == nil {
			out = append(out, c)
		} else if lo, hi, ok := strings.Cut(f[0], "-"); ok && IsAddrEntry(lo) && IsAddrEntry(hi) {
			out = append(out, f[0])
		}
	}
	return out
}

// coveredBy returns the first entry of list (address, prefix or "a-b"
// range) that contains addr entirely, or "".
func coveredBy(addr string, list []string) string {
	lo, hi, ok := addrBounds(addr)
	if !ok {
		return ""
	}
	for _, e := range list {
		elo, ehi, ok := addrBounds(e)
		if ok && elo.Is4() == lo.Is4() && elo.Compare(lo) <= 0 && hi.Compare(ehi) <= 0 {
			return e
		}
	}
	return ""
}

// addrBounds gives the first and last address of an address, prefix or range.
func addrBounds(s string) (lo, hi netip.Addr, ok bool) {
	if a, b, isRange := strings.Cut(s, "-"); isRange {
		la, err1 := netip.ParseAddr(a)
		hb, err2 := netip.ParseAddr(b)
		if err1 != nil || err2 != nil {
			return lo, hi, false
		}
		return la.Unmap(), hb.Unmap(), true
	}
	c, err := CanonicalAddr(s)
	if err != nil {
		return lo, hi, false
	}
	if !strings.Contains(c, "/") {
		a := netip.MustParseAddr(c)
		return a, a, true
	}
	p := netip.MustParsePrefix(c)
	lo = p.Addr()
	b := lo.AsSlice()
	bits := p.Bits()
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			if i*8+bit >= bits {
				b[i] |= 0x80 >> bit
			}
		}
	}
	hi, _ = netip.AddrFromSlice(b)
	return lo, hi, true
}

// withoutLine drops the entries equal to v.
func withoutLine(list []string, v string) []string {
	out := make([]string, 0, len(list))
	for _, e := range list {
		if e != v {
			out = append(out, e)
		}
	}
	return out
}
