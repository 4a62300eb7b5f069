package ruleset

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
)

// Every value that ends up inside an nft script passes through one of these
// validators first. nft parses its input as a language, so an unvalidated
// profile entry such as "1.2.3.4; flush ruleset" would be a command injection
// into a script that runs with network-admin rights (docs/shield-hook.md, The ruleset, rule by rule).

// The package's regular expressions are compiled on first use, not at
// package init: every terok-sandbox process links this package, and most
// (a `stop`, a `gate` command) never validate or verify a ruleset; compiling
// them all at init cost ~0.3-0.6 ms per process.
var validRes = sync.OnceValue(func() (r struct{ ident, domain *regexp.Regexp }) {
	r.ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	r.domain = regexp.MustCompile(`^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$`)
	return r
})

// InvalidIPError is returned for a value that is not an IP address or CIDR.
type InvalidIPError struct{ Value string }

func (e *InvalidIPError) Error() string { return fmt.Sprintf("Invalid IP/CIDR: '%s'", e.Value) }

// CanonicalIP parses an IPv4/IPv6 address or CIDR and returns its canonical
// text: surrounding whitespace trimmed, IPv6 compressed, IPv4-mapped IPv6
// addresses unmapped to IPv4, host bits of a prefix cleared, and a full-length
// prefix (/32, /128) written as a plain address — the form `nft list` shows,
// so values compare equal to what the kernel reports. Zones (fe80::1%eth0) are
// rejected: they mean nothing in a set.
func CanonicalIP(s string) (string, error) {
	v := strings.TrimSpace(s)
	if v == "" || len(v) > 64 {
		return "", &InvalidIPError{Value: s}
	}
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil || p.Addr().Zone() != "" {
			return "", &InvalidIPError{Value: s}
		}
		addr, bits := p.Addr(), p.Bits()
		if addr.Is4In6() && bits >= 96 {
			addr, bits = addr.Unmap(), bits-96
		}
		p = netip.PrefixFrom(addr, bits).Masked()
		if bits == addr.BitLen() {
			return addr.String(), nil
		}
		return p.String(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return "", &InvalidIPError{Value: s}
	}
	return a.Unmap().String(), nil
}

// IsIPv6 reports whether a canonical address or CIDR (from CanonicalIP) is IPv6.
func IsIPv6(canon string) bool { return strings.Contains(canon, ":") }

// IsIP reports whether s parses as an IP address or CIDR.
func IsIP(s string) bool { _, err := CanonicalIP(s); return err == nil }

// ValidPort checks a TCP/UDP port number.
func ValidPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("invalid port %d: must be an integer 1..65535", p)
	}
	return nil
}

// ValidIdent checks an nft table or set identifier.
func ValidIdent(s string) error {
	if len(s) > 64 || !validRes().ident.MatchString(s) {
		return fmt.Errorf("invalid nft identifier '%s'", s)
	}
	return nil
}

// ValidDomain trims and lowercases s and reports whether it is an acceptable
// allowlist domain (docs/shield-resolver.md, Allowlist): dot-separated labels ending in an
// alphabetic TLD of two or more letters, with an optional leading "*.". Bare
// TLDs, IP literals, spaces and shell or nft metacharacters fail. The leading
// "*." is kept in the result.
func ValidDomain(s string) (string, bool) {
	d := strings.ToLower(strings.TrimSpace(s))
	if len(d) > 255 || !validRes().domain.MatchString(d) {
		return "", false
	}
	for _, label := range strings.Split(strings.TrimPrefix(d, "*."), ".") {
		if len(label) > 63 {
			return "", false
		}
	}
	return d, true
}

// Covered reports whether addr (an IP or CIDR) lies entirely inside one of
// the entries of list (IPs or CIDRs; invalid entries ignored). Interval sets
// reject an element that overlaps one already present, so an address covered
// by an allowed CIDR must not be added again.
func Covered(addr string, list []string) bool {
	p, ok := prefixOf(addr)
	if !ok {
		return false
	}
	for _, e := range list {
		q, ok := prefixOf(e)
		if ok && covers(q, p) {
			return true
		}
	}
	return false
}

func prefixOf(s string) (netip.Prefix, bool) {
	c, err := CanonicalIP(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	if strings.Contains(c, "/") {
		p, err := netip.ParsePrefix(c)
		return p, err == nil
	}
	a, err := netip.ParseAddr(c)
	if err != nil {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// covers reports whether outer contains every address of inner.
func covers(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}
