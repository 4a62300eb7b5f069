package shield

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

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
