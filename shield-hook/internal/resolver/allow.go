package resolver

import (
	"strings"
	"time"

	"terok.dev/sandbox/common/ruleset"
)

// maxNameLen is the longest name accepted, in presentation form without
// the trailing dot (RFC 1035's 255 wire octets).
const maxNameLen = 253

// maxCNAMENames bounds the names admitted through CNAME chains: a hostile
// container can make the upstream return many distinct chains, and each
// entry costs memory until its TTL ends.
const maxCNAMENames = 4096

// maxCNAMEPerOrigin bounds the live CNAME admissions of one listed
// domain, and maxCNAMEPerSecond the new admissions of all of them: a
// listed name whose zone points into a zone the container's user controls
// (docs/shield-resolver.md, CNAME rule) opens at most this many
// exact names, at this pace.
const (
	maxCNAMEPerOrigin = 16
	maxCNAMEPerSecond = 32
)

// originOpen is the origin of what was forwarded or learned while the
// resolver.open marker was present (shield down): no listed domain vouches
// for it, so it goes when the marker does.
const originOpen = ""

// originAsk is the origin of an unlisted name answered in interactive mode
// (docs/shield-resolver.md, Interactive approval): its answer is passed on
// and remembered for the held connection's name, never learned, so a
// connection to it is held for the decider. No domain name is empty or
// contains a space.
const originAsk = " interactive"

// normalizeName returns name (miekg/dns presentation form, as unpacked
// from the wire) lowercased and without its trailing dot. Only letters,
// digits, '-', '_' and '.' are accepted: anything else is presented with a
// backslash escape by the DNS library, and an escaped dot inside a label
// would otherwise look like a label boundary to a suffix match
// ("evil\.example.com." is a child of "com.", not of "example.com.").
// ok is false for such a name; tooLong reports a name over 253 octets.
func normalizeName(name string) (norm string, ok, tooLong bool) {
	name = strings.TrimSuffix(name, ".")
	if len(name) > maxNameLen {
		return "", false, true
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c == '.':
			if i == 0 || b[i-1] == '.' {
				return "", false, false
			}
		default:
			return "", false, false
		}
	}
	return string(b), true, false
}

// domainSet is the allowlist in matching form: each entry lowercased,
// without "*." and without a trailing dot. A name matches an entry when it
// is the entry or a subdomain of it (docs/shield-resolver.md, Allowlist).
type domainSet map[string]struct{}

// newDomainSet builds the matching form of domains (shieldbundle's
// EffectiveDomains, already validated); entries that are not valid domains
// are ignored.
func newDomainSet(domains []string) domainSet {
	s := domainSet{}
	for _, d := range domains {
		v, ok := ruleset.ValidDomain(d)
		if !ok {
			continue
		}
		v = strings.TrimSuffix(strings.TrimPrefix(v, "*."), ".")
		if v != "" {
			s[v] = struct{}{}
		}
	}
	return s
}

// match returns the listed domain that admits the normalized name: the
// name itself or its closest listed parent.
func (s domainSet) match(name string) (string, bool) {
	for n := name; n != ""; {
		if _, ok := s[n]; ok {
			return n, true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 {
			break
		}
		n = n[i+1:]
	}
	return "", false
}

// cnameEntry admits one exact name reached through a CNAME chain of a
// forwarded answer, until expires, on behalf of origin (the listed domain
// that admitted the chain's start).
type cnameEntry struct {
	expires time.Time
	origin  string
}

// policy decides which names are forwarded. It is not safe for concurrent
// use; the resolver guards it with its mutex.
type policy struct {
	open bool
	// ask is interactive mode: unlisted names are answered under
	// originAsk (address types only) instead of refused.
	ask     bool
	domains domainSet
	cnames  map[string]cnameEntry
	// rateSec and rateN count the new CNAME admissions of the current
	// second (maxCNAMEPerSecond).
	rateSec int64
	rateN   int
}

func newPolicy(domains []string, open bool) *policy {
	return &policy{open: open, domains: newDomainSet(domains), cnames: map[string]cnameEntry{}}
}

// admit returns the origin under which the normalized name is forwarded:
// the listed domain, the origin of an unexpired CNAME admission, or
// originOpen while the shield is down.
func (p *policy) admit(name string, now time.Time) (string, bool) {
	if o, ok := p.domains.match(name); ok {
		return o, true
	}
	if e, ok := p.cnames[name]; ok {
		if now.Before(e.expires) {
			return e.origin, true
		}
		delete(p.cnames, name)
	}
	if p.open {
		return originOpen, true
	}
	if p.ask {
		return originAsk, true
	}
	return "", false
}

// admitCNAME admits target for ttl on behalf of origin. A name the
// allowlist already admits needs no entry, a TTL of 0 admits nothing; an
// admission only extends (never changes the origin of) a live entry. A new
// name is refused once its origin has maxCNAMEPerOrigin live entries, once
// maxCNAMEPerSecond names were admitted this second, or when the table is
// full even after dropping expired entries.
func (p *policy) admitCNAME(target, origin string, ttl time.Duration, now time.Time) {
	if ttl <= 0 {
		return
	}
	if _, ok := p.domains.match(target); ok {
		return
	}
	exp := now.Add(ttl)
	if e, ok := p.cnames[target]; ok && now.Before(e.expires) {
		if e.origin == origin && exp.After(e.expires) {
			p.cnames[target] = cnameEntry{expires: exp, origin: origin}
		}
		return
	}
	if sec := now.Unix(); sec != p.rateSec {
		p.rateSec, p.rateN = sec, 0
	}
	if p.rateN >= maxCNAMEPerSecond {
		return
	}
	live := 0
	for n, e := range p.cnames {
		switch {
		case !now.Before(e.expires):
			delete(p.cnames, n)
		case e.origin == origin:
			live++
		}
	}
	if live >= maxCNAMEPerOrigin || len(p.cnames) >= maxCNAMENames {
		return
	}
	p.rateN++
	p.cnames[target] = cnameEntry{expires: exp, origin: origin}
}

// stillAllowed reports whether an origin recorded under an earlier
// allowlist is still vouched for by this one.
func (p *policy) stillAllowed(origin string) bool {
	if origin == originOpen {
		return p.open
	}
	if origin == originAsk {
		return p.ask
	}
	_, ok := p.domains.match(origin)
	return ok
}

// replace installs a reloaded allowlist and marker, dropping CNAME
// admissions whose origin is no longer allowed.
func (p *policy) replace(domains []string, open bool) {
	p.domains = newDomainSet(domains)
	p.open = open
	for n, e := range p.cnames {
		if !p.stillAllowed(e.origin) {
			delete(p.cnames, n)
		}
	}
}

// setOpen changes only the open state (the live table changed between
// bypass and enforcing), dropping what the open state alone admitted.
func (p *policy) setOpen(open bool) {
	p.open = open
	for n, e := range p.cnames {
		if !p.stillAllowed(e.origin) {
			delete(p.cnames, n)
		}
	}
}

// clampTTL turns an answer's TTL into a learned element's lifetime
// (ruleset.LearnedMinTTLSeconds … LearnedMaxTTLSeconds).
func clampTTL(ttl uint32) time.Duration {
	s := int64(ttl)
	if s < ruleset.LearnedMinTTLSeconds {
		s = ruleset.LearnedMinTTLSeconds
	}
	if s > ruleset.LearnedMaxTTLSeconds {
		s = ruleset.LearnedMaxTTLSeconds
	}
	return time.Duration(s) * time.Second
}
