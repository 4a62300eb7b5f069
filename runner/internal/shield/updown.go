package shield

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

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
