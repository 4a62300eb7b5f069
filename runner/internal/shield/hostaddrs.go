package shield

import (
	"net"
	"net/netip"

	"terok.dev/sandbox/common/ruleset"
)

// The host's own addresses (docs/shield.md, "The host's own addresses").
// Under slirp4netns a connection from the container to an address of the
// host leaves through slirp4netns, which connects from the host's network
// namespace: to the host itself, where every service bound to that address
// or to 0.0.0.0 answers. A DNS answer naming such an address (rebinding
// to the host's own, non-special address: its LAN or public address, a
// bridge, a veth) would open them all. The host's services are meant to
// be reached only through the gateway rules (the configured loopback
// ports), so every non-special address of the host goes into the deny
// sets of every enforcing ruleset this runner renders; the deny sets come
// before the allow and dns sets. Only an explicit allow of exactly that
// address (a profile line or `shield allow ADDR`) opens one, deliberately;
// a wider allowed range does not.

// hostAddrs returns the host's addresses: Options.HostAddrs when set
// (tests), else the addresses of every interface of the runner's network
// namespace (the host's: podman's user-mode networking connects from it).
func (s *Shield) hostAddrs() []string {
	if s.opts.HostAddrs != nil {
		return s.opts.HostAddrs()
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		s.warn("could not list the host's addresses; a DNS answer naming one of them is not refused", "error", err)
		return nil
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// hostDeny are the deny elements for the host's own addresses: canonical
// single addresses, special ones left out (the special-range rejects cover
// them, before any learned set), and those the effective allowlist names
// exactly left out (the operator's deliberate choice).
func hostDeny(host, allow []string) []string {
	exact := map[string]bool{}
	for _, a := range allow {
		exact[a] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, h := range host {
		a, err := netip.ParseAddr(h)
		if err != nil || a.Zone() != "" {
			continue
		}
		a = a.Unmap()
		c := a.String()
		if ruleset.IsSpecial(a) || exact[c] || seen[c] {
			continue
		}
		seen[c] = true
		out = append(out, c)
	}
	return out
}

// withHostDeny is deny plus the host's own addresses, for an enforcing
// ruleset with the effective allowlist allow.
func (s *Shield) withHostDeny(deny, allow []string) []string {
	out := append([]string(nil), deny...)
	for _, h := range hostDeny(s.hostAddrs(), allow) {
		if !containsString(out, h) {
			out = append(out, h)
		}
	}
	return out
}
