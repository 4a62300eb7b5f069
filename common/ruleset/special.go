package ruleset

import "net/netip"

// Special address ranges (docs/shield-hook.md, "Special ranges"). An address
// learned from a DNS answer never opens any of them: the rejects for these
// ranges come before the learned-address sets in the output chain, and the
// resolver does not even add such an answer to a set. Only an explicit
// IP/CIDR entry (a profile line or `shield allow ADDR`) in the allow sets,
// which are consulted before these rejects, can open one deliberately.
//
// The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) are deliberately not listed: nothing on a host is reached
// through them, and the end-to-end tests use them for their outside hosts.
var (
	specialV4 = []string{
		"0.0.0.0/8",      // "this network"
		"10.0.0.0/8",     // private; slirp4netns's host (10.0.2.2) and DNS (10.0.2.3)
		"100.64.0.0/10",  // carrier-grade NAT, tailnets, some cloud metadata (100.100.100.200)
		"127.0.0.0/8",    // loopback
		"169.254.0.0/16", // link-local: the metadata address 169.254.169.254, pasta's 169.254.1.x
		"172.16.0.0/12",  // private
		"192.0.0.0/24",   // IETF protocol assignments
		"192.88.99.0/24", // 6to4 relay anycast: a way into IPv6-over-IPv4 tunnels
		"192.168.0.0/16", // private
		"198.18.0.0/15",  // benchmarking
		"224.0.0.0/4",    // multicast
		"240.0.0.0/4",    // reserved and the limited broadcast 255.255.255.255
	}
	specialV6 = []string{
		"::/96",         // unspecified, loopback and IPv4-compatible (::a.b.c.d, an IPv6 spelling of IPv4)
		"::ffff:0:0/96", // IPv4-mapped: an IPv6 spelling of any IPv4 address
		"64:ff9b::/96",  // NAT64 well-known prefix: reaches IPv4 through a translator
		"64:ff9b:1::/48",
		"100::/64",  // discard
		"2001::/23", // IETF protocol assignments, Teredo (2001::/32, tunnels to IPv4) included; not 2001:db8::/32
		"2002::/16", // 6to4: embeds an IPv4 address
		"5f00::/16", // SRv6 segment identifiers: steer a packet through a segment-routing domain
		"fc00::/7",  // unique local (the fd00::2 slirp4netns host address, fd00:ec2::254 metadata)
		"fe80::/10", // link-local
		"fec0::/10", // site-local (deprecated, still routed by some stacks)
		"ff00::/8",  // multicast
	}
	specialPrefixes = func() []netip.Prefix {
		var out []netip.Prefix
		for _, s := range append(append([]string(nil), specialV4...), specialV6...) {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}()
)

// SpecialV4 returns the IPv4 ranges rejected before any learned address is
// consulted (a copy: callers may not change the package's list).
func SpecialV4() []string { return append([]string(nil), specialV4...) }

// SpecialV6 returns the IPv6 ranges of SpecialV4's rule.
func SpecialV6() []string { return append([]string(nil), specialV6...) }

// IsSpecial reports whether a lies in a special range. An IPv4-mapped IPv6
// address is judged as the IPv4 address it spells, and anything that is not
// a valid address counts as special (the caller must never admit it).
func IsSpecial(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	if a.Is4In6() {
		a = a.Unmap()
	}
	for _, p := range specialPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ResolverMark is the packet mark (SO_MARK) of the per-container resolver's
// sockets towards the upstream forwarder. Setting SO_MARK needs
// CAP_NET_ADMIN (or, since Linux 5.17, CAP_NET_RAW) over the container's
// network namespace, which the container's processes never have, so the output chain accepts DNS to the
// forwarder only from packets carrying this mark.
const ResolverMark uint32 = 0x7e5d0053

// RefusedMark is the packet mark the resolver gives a held packet it
// refuses in interactive mode (docs/shield-hook.md, The ruleset, rule by
// rule): NFQUEUE's verdicts are accept or drop, so the refusal is the
// verdict NF_REPEAT with this mark, and the first rules of the interactive
// output chain (RefusedRejects) reject a packet carrying it, a TCP SYN
// with a reset, anything else with ICMP admin-prohibited, so the connect
// fails at once instead of running into its timeout. Setting a mark
// (SO_MARK) needs CAP_NET_ADMIN or CAP_NET_RAW over the netns, which no
// process of the container has; and a packet carrying the mark anyway
// meets the rejects before any other rule, so the mark opens nothing.
const RefusedMark uint32 = 0x7e5d0052

// Sets that hold addresses learned from DNS answers (the per-container
// resolver, or host-side resolution of a domain in the static tiers and by
// `shield allow DOMAIN`). They are matched after the special-range rejects.
const (
	SetDNSV4 = "dns_v4"
	SetDNSV6 = "dns_v6"
	KindDNS  = "dns"
)

// Learned-address lifetime bounds: the resolver gives each element the
// answer's TTL, raised to at least LearnedMinTTL (applications cache
// answers longer than a short TTL says) and cut to at most LearnedMaxTTL.
const (
	LearnedMinTTLSeconds = 5 * 60
	LearnedMaxTTLSeconds = 24 * 60 * 60
)
