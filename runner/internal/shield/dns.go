package shield

import (
	"fmt"
	"path/filepath"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podmaninfo"
	"terok.dev/sandbox/runner/internal/profile"
)

// DNS tiers (docs/shield.md, "DNS: the per-container resolver"). Every
// launch uses the resolver tier; the others are only ever read from the
// bundles of containers started by older versions.
const (
	TierResolver = shieldbundle.TierResolver
	TierDnsmasq  = shieldbundle.TierDnsmasq
	TierDig      = shieldbundle.TierDig
	TierGetent   = shieldbundle.TierGetent
)

// cacheKeyFile was the sidecar of the host-side resolution cache of the
// static tiers; pre-start removes a stale one (nothing is resolved on the
// host any more).
const cacheKeyFile = "profile.allowed.key"

// fileNetworkMode records the container's network mode (slirp4netns or
// pasta) for the live operations, which rebuild the ruleset and must know
// whether the pasta host-loopback rules belong in it. The forwarder address
// no longer tells (it is configurable), so it is written at pre-start. Only
// the runner reads it; a bundle without it is an old one, whose mode
// follows from its forwarder.
const fileNetworkMode = "network.mode"

// writeProfileLists splits the composed profile entries into the explicit
// addresses (profile.allowed: they go to the allow sets and may open a
// special range deliberately) and the domains (profile.domains: the
// resolver forwards them and learns their addresses into the dns sets). No
// domain is resolved on the host: what the container may reach is what its
// own resolver learns, for as long as the answer lives.
func writeProfileLists(stateDir string, entries []string) error {
	addrs, domains := profile.SplitEntries(entries)
	canon := make([]string, 0, len(addrs))
	seen := map[string]bool{}
	for _, a := range addrs {
		c, err := ruleset.CanonicalIP(a)
		if err != nil {
			// Compose validated every entry; a failure here is a bug.
			return fmt.Errorf("profile entry %q: %w", a, err)
		}
		if !seen[c] {
			seen[c] = true
			canon = append(canon, c)
		}
	}
	norm := make([]string, 0, len(domains))
	for _, d := range domains {
		n, ok := ruleset.ValidDomain(d)
		if !ok {
			return fmt.Errorf("profile entry %q is not a valid domain", d)
		}
		if !seen[n] {
			seen[n] = true
			norm = append(norm, n)
		}
	}
	if err := writeBundleFile(filepath.Join(stateDir, shieldbundle.FileProfileAllowed), linesOf(canon), 0o600, false); err != nil {
		return fmt.Errorf("write profile addresses: %w", err)
	}
	if err := writeBundleFile(filepath.Join(stateDir, shieldbundle.FileProfileDomains), linesOf(norm), 0o600, false); err != nil {
		return fmt.Errorf("write profile domains: %w", err)
	}
	return removeIfExists(filepath.Join(stateDir, cacheKeyFile))
}

// networkModeOf is the network mode recorded in a bundle; an old bundle
// without network.mode was pasta exactly when its forwarder was pasta's.
func networkModeOf(dir, dns string) string {
	switch m := readTrim(filepath.Join(dir, fileNetworkMode)); m {
	case podmaninfo.Slirp4netns, podmaninfo.Pasta:
		return m
	}
	if dns == ruleset.PastaDNS {
		return podmaninfo.Pasta
	}
	return podmaninfo.Slirp4netns
}

// hostLoopbackFor is the ruleset's HostLoopback for a network mode: only
// under pasta is 169.254.1.2 the host; under slirp4netns that address is
// whatever answers for it outside, so it gets no rule at all.
func hostLoopbackFor(mode string) string {
	if mode == podmaninfo.Pasta {
		return ruleset.PastaHostLoopback
	}
	return ""
}
