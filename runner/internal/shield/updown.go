package shield

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// bundleDNS is the forwarder recorded at pre-start, which every rebuilt
// ruleset names (the resolver's forwarder; in the resolver tier the
// container's resolv.conf names 127.0.0.1, so it cannot tell).
func (s *Shield) bundleDNS(dir string) (string, error) {
	dns, err := shieldbundle.ReadUpstreamDNS(dir)
	if err != nil {
		return "", err
	}
	if dns == "" {
		return "", errors.New("upstream DNS not persisted in state: start the container with the shield first")
	}
	return dns, nil
}

// liveGateways are the gateway elements for a rebuilt ruleset: the ones the
// hook discovered plus, under slirp4netns, the fixed defaults.
func (s *Shield) liveGateways(dir, mode string) []string {
	var gw []string
	for _, f := range []string{shieldbundle.FileGateway, shieldbundle.FileGatewayV6} {
		if g := readTrim(s.path(dir, f)); g != "" {
			if c, err := ruleset.CanonicalIP(g); err == nil {
				gw = append(gw, c)
			}
		}
	}
	if mode == podmaninfo.Slirp4netns {
		for _, g := range ruleset.SlirpGateways() {
			if !containsString(gw, g) {
				gw = append(gw, g)
			}
		}
	}
	return gw
}

// buildLive renders the ruleset Up/Down/Preview apply.
func (s *Shield) buildLive(dir, dns string, down, allowAll bool) (string, error) {
	mode := networkModeOf(dir, dns)
	smode, err := bundleMode(dir)
	if err != nil {
		return "", err
	}
	sc := ruleset.Script{
		Options:  s.rulesetOptions(dns, mode, smode),
		Bypass:   down,
		AllowAll: allowAll,
		Gateways: s.liveGateways(dir, mode),
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
		sc.Allow, sc.Deny = allow, s.withHostDeny(deny, allow)
	}
	text, skipped, err := sc.Render()
	for _, sk := range skipped {
		s.warn("skipping invalid address in the allow/deny lists", "entry", truncate(sk, 80), "dir", dir)
	}
	return text, err
}

// Up re-applies the enforcing ruleset (docs/shield.md, Live operations) and closes the
// container's DNS again: resolver.open goes, and the resolver, told to
// reload, forwards only allowlisted names and drops what it learned for
// the others while the shield was down.
func (s *Shield) Up(ctx context.Context, container string) error {
	return s.switchMode(ctx, container, false, false)
}

// Down applies the bypass ruleset (docs/shield.md, Live operations) and opens the
// container's DNS: with resolver.open present the resolver forwards every
// name (still only from its marked sockets, and still learning only
// non-special addresses).
func (s *Shield) Down(ctx context.Context, container string, allowAll bool) error {
	return s.switchMode(ctx, container, true, allowAll)
}

func (s *Shield) switchMode(ctx context.Context, container string, down, allowAll bool) error {
	dir, err := s.stateDir()
	if err != nil {
		return err
	}
	verb := "shield up"
	if down {
		verb = "shield down"
	}
	if err := s.requireResolverTier(dir, container, verb); err != nil {
		return err
	}
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return err
	}
	dns, err := s.bundleDNS(dir)
	if err != nil {
		return err
	}
	text, err := s.buildLive(dir, dns, down, allowAll)
	if err != nil {
		return err
	}
	open := s.path(dir, shieldbundle.FileResolverOpen)
	var reloadErr error
	if !down {
		// DNS closes before the table does, so a failure below leaves the
		// bypass table with a resolver that forwards allowlisted names
		// only. A resolver that cannot be told does not stop the table
		// from going up: that error is reported after it did.
		if err := removeIfExists(open); err != nil {
			return err
		}
		reloadErr = s.reloadResolver(dir)
	}
	if err := s.applyLive(ctx, dir, pid, text, down); err != nil {
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
		if err := writeBundleFile(open, []byte("open\n"), 0o600, false); err != nil {
			return fmt.Errorf("open the container's DNS: %w", err)
		}
		lifted, err := s.liftQuarantine(dir)
		if err != nil {
			return err
		}
		if err := s.reloadResolver(dir); err != nil {
			return err
		}
		var detail []string
		if allowAll {
			detail = append(detail, "allow_all=True")
		}
		if lifted {
			detail = append(detail, quarantineLifted)
		}
		s.audit(container, "shield_down", "", strings.Join(detail, " "))
		return nil
	}
	if errs := verifyEnforcing(dir, listed); len(errs) > 0 {
		return specErrorf("Ruleset verification failed: %s", strings.Join(errs, "; "))
	}
	// The quarantine marker goes only now that the enforcing table is in
	// place: a failure before leaves the container quarantined, restarts
	// included.
	lifted, err := s.liftQuarantine(dir)
	if err != nil {
		return err
	}
	detail := ""
	if lifted {
		detail = quarantineLifted
	}
	s.audit(container, "shield_up", "", detail)
	return reloadErr
}

// quarantineLifted is the audit detail of the `shield up`/`down` that
// ended a quarantine.
const quarantineLifted = "quarantine_lifted=True"

// Preview renders the ruleset Up (or Down) would apply, without applying.
func (s *Shield) Preview(down, allowAll bool) (string, error) {
	if allowAll && !down {
		return "", errors.New("--all requires --down")
	}
	dir, err := s.stateDir()
	if err != nil {
		return "", err
	}
	dns, err := s.bundleDNS(dir)
	if err != nil {
		return "", err
	}
	return s.buildLive(dir, dns, down, allowAll)
}

// applyLive puts text in force in the netns of pid as one transaction
// that replaces the live table. The enforcing table of an interactive
// bundle goes through the container's own hook executable
// (`terok-shield-hook apply-ruleset`, run in the netns like nft): its
// queue rules need the hook's netlink builder on a kernel without
// nft_queue, where nft cannot write the xtables NFQUEUE fallback
// (docs/shield.md, Interactive mode: the queue rule). Everything else is
// applied with nft -f.
func (s *Shield) applyLive(ctx context.Context, dir string, pid int, text string, down bool) error {
	mode, err := bundleMode(dir)
	if err != nil {
		return err
	}
	if down || mode != shieldbundle.ModeInteractive {
		return s.nftScript(ctx, pid, ruleset.Replace(s.liveTable(ctx, pid) != "", text))
	}
	exe := s.path(dir, shieldbundle.HookBinary)
	if _, err := os.Stat(exe); err != nil {
		if s.opts.HookBinary == "" {
			return fmt.Errorf("the container's hook executable is missing (%w) and no terok-shield-hook is installed", err)
		}
		exe = s.opts.HookBinary
	}
	_, err = s.inNetns(ctx, pid, text, exe, shieldbundle.ApplySubcommand, shieldbundle.ApplyModeArg(mode))
	return err
}
