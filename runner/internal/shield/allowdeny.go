package shield

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
)

// ParseTarget splits an allow/deny target into an address or a domain.
func ParseTarget(target string) (addr, domain string, err error) {
	t := strings.TrimSpace(target)
	if t == "" {
		return "", "", errors.New("empty target: give an IP address, a CIDR or a domain")
	}
	if c, err := ruleset.CanonicalIP(t); err == nil {
		return c, "", nil
	}
	if strings.ContainsAny(t, "/:") || isAllDigitsAndDots(t) {
		return "", "", specErrorf("Invalid IP/CIDR: '%s'", truncate(t, 80))
	}
	if d, ok := ruleset.ValidDomain(t); ok {
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

// Allow is `shield allow` (docs/shield.md, Live operations). An address or CIDR goes into the live
// allow set at once and into live.allowed, and is returned. A domain goes
// into live.domains and the container's resolver is told to reload: its
// addresses are learned (into the dns sets) when the container resolves
// it, so none is returned.
func (s *Shield) Allow(ctx context.Context, container, target string) ([]string, error) {
	return s.applyTarget(ctx, container, target, "allow", "allowed", s.allowIP, s.allowDomain)
}

// Deny is `shield deny` (docs/shield.md, Live operations). An address or CIDR leaves the allow and
// dns sets and goes into the deny set, and is returned; a domain leaves
// the resolver's allowlist (the resolver refuses it from now on and drops
// the addresses it learned for it), and nothing is returned.
func (s *Shield) Deny(ctx context.Context, container, target string) ([]string, error) {
	return s.applyTarget(ctx, container, target, "deny", "denied", s.denyIP, s.denyDomain)
}

// applyTarget is the common path of Allow and Deny: parse the target, act
// on it in the running container, audit the success, then persist the
// ruleset for restarts.
func (s *Shield) applyTarget(ctx context.Context, container, target, verb, action string,
	perIP func(ctx context.Context, dir string, pid int, ip string) error,
	perDomain func(dir, domain string) error) ([]string, error) {
	dir, err := s.stateDir()
	if err != nil {
		return nil, err
	}
	addr, domain, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	if err := s.requireResolverTier(dir, container, verb); err != nil {
		return nil, err
	}
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return nil, err
	}
	if domain != "" {
		if err := perDomain(dir, domain); err != nil {
			return nil, err
		}
		s.audit(container, action, domain, "target="+strings.TrimSpace(target))
		return nil, nil
	}
	if err := perIP(ctx, dir, pid, addr); err != nil {
		return nil, fmt.Errorf("%s %s for %s: %w", verb, addr, container, err)
	}
	s.audit(container, action, addr, "target="+strings.TrimSpace(target))
	return []string{addr}, s.refreshBundleRuleset(dir)
}

// requireResolverTier refuses live changes to a container started by an
// older version (a bundle of the dnsmasq, dig or getent tier): its table
// predates closed DNS, and any ruleset this version renders would reject
// the unmarked DNS its dnsmasq or its own processes send, while element
// changes would land in sets with the old meaning. Relaunching gives it
// the resolver tier.
func (s *Shield) requireResolverTier(dir, container, verb string) error {
	if t := s.tier(dir); t != TierResolver {
		if t == "" {
			t = "unknown"
		}
		return fmt.Errorf("container %s was started by an older terok-sandbox (DNS tier %s, not %s): its firewall predates closed DNS and cannot be changed live (%s); stop it and run it again",
			container, t, TierResolver, verb)
	}
	return nil
}

// refreshBundleRuleset rewrites ruleset.nft from the current lists, so a
// container restarted by podman (the global hook applies ruleset.nft again)
// keeps its live allows and, above all, its denies; ruleset.nft.sha256
// tells the hook that this file, not only the launch's, is the runner's.
func (s *Shield) refreshBundleRuleset(dir string) error {
	dns := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS))
	if dns == "" {
		return errors.New("cannot persist the change for restarts: upstream DNS not persisted in state")
	}
	mode := networkModeOf(dir, dns)
	smode, err := bundleMode(dir)
	if err != nil {
		return err
	}
	// Under the bundle lock from the lists to ruleset.nft.sha256: of two
	// concurrent live changes, the last to write rendered the lists with
	// both, and the digest file names the ruleset.nft beside it.
	l, err := shieldbundle.LockBundle(dir)
	if err != nil {
		return err
	}
	defer l.Close()
	sc := ruleset.Script{Options: s.rulesetOptions(dns, mode, smode)}
	if mode != podmaninfo.Pasta {
		sc.Gateways = ruleset.SlirpGateways()
	}
	if sc.Allow, err = shieldbundle.EffectiveAllowlist(dir); err != nil {
		return fmt.Errorf("read allowlists: %w", err)
	}
	if sc.Deny, err = shieldbundle.ReadIPFile(s.path(dir, shieldbundle.FileDenyList)); err != nil {
		return fmt.Errorf("read deny list: %w", err)
	}
	sc.Deny = s.withHostDeny(sc.Deny, sc.Allow)
	text, _, err := sc.Render()
	if err != nil {
		return fmt.Errorf("render ruleset: %w", err)
	}
	// Both fsynced, ruleset.nft first: the launch's digest annotation no
	// longer matches, and the hook accepts the new file only by
	// ruleset.nft.sha256 (docs/shield-hook.md, Ruleset digest). A crash
	// between the two leaves a file neither digest names: that container
	// then refuses to start, never starts with a torn table.
	if err := writeFile(dir, shieldbundle.FileRuleset, text); err != nil {
		return err
	}
	return writeFile(dir, shieldbundle.FileRulesetDigest, shieldbundle.RulesetDigest([]byte(text))+"\n")
}

func (s *Shield) allowIP(ctx context.Context, dir string, pid int, ip string) error {
	ip, err := ruleset.CanonicalIP(ip)
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
		}
	}
	// Also from the live deny set (removing an absent element only makes
	// nft complain).
	if err := s.nftScript(ctx, pid, ruleset.DeleteElements(ruleset.KindDeny, []string{ip})); err != nil && !expectedMissing(err) {
		s.warn("could not remove address from the live deny set", "address", ip, "error", err)
	}
	if err := s.addElement(ctx, pid, ruleset.KindAllow, ip); err != nil {
		return err
	}
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileLiveAllowed), ip); err != nil {
		return fmt.Errorf("persist allowed address: %w", err)
	}
	return nil
}

// allowDomain puts domain on the resolver's allowlist: out of
// denied.domains, into live.domains, and a reload.
func (s *Shield) allowDomain(dir, domain string) error {
	d, ok := ruleset.ValidDomain(domain)
	if !ok {
		return fmt.Errorf("invalid domain %q", domain)
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileDeniedDomains), d, false); err != nil {
		return fmt.Errorf("update denied domains: %w", err)
	}
	eff, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	if !containsString(eff, d) {
		if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileLiveDomains), d); err != nil {
			return fmt.Errorf("persist allowed domain: %w", err)
		}
	}
	return s.reloadResolver(dir)
}

func (s *Shield) denyIP(ctx context.Context, dir string, pid int, ip string) error {
	ip, err := ruleset.CanonicalIP(ip)
	if err != nil {
		return err
	}
	if err := s.nftScript(ctx, pid, ruleset.DeleteElements(ruleset.KindAllow, []string{ip})); err != nil && !expectedMissing(err) {
		s.warn("could not remove address from the live allow set", "address", ip, "error", err)
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileLiveAllowed), ip, false); err != nil {
		return fmt.Errorf("update live allowlist: %w", err)
	}
	// Addresses the resolver learned inside the target leave the dns sets
	// too (the deny set, checked first, would reject them anyway; this
	// keeps `shield rules` honest).
	if err := s.deleteLearned(ctx, pid, ip); err != nil {
		s.warn("could not remove learned addresses from the live dns set", "address", ip, "error", err)
	}
	addErr := s.addElement(ctx, pid, ruleset.KindDeny, ip)
	if addErr != nil {
		s.warn("could not add address to the live deny set", "address", ip, "error", addErr)
	}
	// Always persisted: a rebuild (shield up, a restart) starts with empty
	// dns sets that the resolver fills again, and an address inside an
	// allowed range would be allowed again, so only deny.list keeps it
	// denied.
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileDenyList), ip); err != nil {
		return fmt.Errorf("persist denied address: %w", err)
	}
	// The address must be blocked now: if the deny element could not be
	// added, only a verified absence from every allow entry makes it so.
	if addErr != nil {
		eff, err := shieldbundle.EffectiveAllowlist(dir)
		if err != nil || coveredBy(ip, eff) != "" {
			return fmt.Errorf("address %s is still allowed (inside an allowed range) and could not be added to the deny set: %w", ip, addErr)
		}
		return fmt.Errorf("address %s could not be added to the deny set, so the container's resolver may learn it again: %w", ip, addErr)
	}
	return nil
}

// denyDomain takes domain off the resolver's allowlist: out of
// live.domains, into denied.domains (which also masks a profile entry),
// and a reload, on which the resolver drops what it learned for it. Only
// a listed entry can be denied: the lists are matched per entry, so
// denying a subdomain of a listed domain would change nothing, and saying
// so beats reporting success.
func (s *Shield) denyDomain(dir, domain string) error {
	d, ok := ruleset.ValidDomain(domain)
	if !ok {
		return fmt.Errorf("invalid domain %q", domain)
	}
	eff, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	if !containsString(eff, d) {
		if cover := coveringDomain(d, eff); cover != "" {
			return fmt.Errorf("%s is allowed as a subdomain of the listed %s; deny %s (the whole domain) instead", d, cover, cover)
		}
		return fmt.Errorf("%s is not on the container's domain allowlist: nothing to deny", d)
	}
	if _, err := shieldbundle.RemoveLine(s.path(dir, shieldbundle.FileLiveDomains), d, false); err != nil {
		return fmt.Errorf("update live domains: %w", err)
	}
	if _, err := shieldbundle.AppendUniqueLine(s.path(dir, shieldbundle.FileDeniedDomains), d); err != nil {
		return fmt.Errorf("persist denied domain: %w", err)
	}
	return s.reloadResolver(dir)
}

// coveringDomain is the listed entry that allows d as a subdomain, or "".
// A "*." prefix allows the same names as the bare domain.
func coveringDomain(d string, listed []string) string {
	name := strings.TrimPrefix(d, "*.")
	for _, e := range listed {
		base := strings.TrimPrefix(e, "*.")
		if e != d && (name == base || strings.HasSuffix(name, "."+base)) {
			return e
		}
	}
	return ""
}

func containsString(list []string, v string) bool {
	for _, e := range list {
		if e == v {
			return true
		}
	}
	return false
}
