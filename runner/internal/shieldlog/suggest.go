package shieldlog

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/ruleset"
)

// MaxSuggested bounds a suggested profile: a container that looked up
// thousands of generated names (a DNS tunnel attempt) must not turn into a
// profile of thousands of entries; the most attempted ones are kept.
const MaxSuggested = 200

// Suggestion is a profile built from a container's refused records
// (docs/shield.md, Suggesting a profile).
type Suggestion struct {
	Entries []string // domains first, then addresses; most attempts first
	Omitted int      // entries past MaxSuggested
	Records int      // records read
}

// Suggest collects what the container was refused for not being on its
// allowlist, and what learn mode let through: the names it looked up (A
// and AAAA questions of dns-refused records, the names of seen records),
// the names of refused and learned connections, and the addresses it
// reached without a name. Private ranges, the deny list and quarantine are
// decisions already taken, not missing entries: they are left out, as are
// names that are no valid profile domain.
func Suggest(recs []audit.Record) Suggestion {
	names := map[string]int{}
	addrs := map[string]int{}
	count := func(r audit.Record) int {
		if f, ok := r.Fields["count"].(float64); ok && f > 0 {
			return int(f)
		}
		if n, ok := r.Fields["count"].(int); ok && n > 0 {
			return n
		}
		return 1
	}
	str := func(r audit.Record, k string) string {
		s, _ := r.Fields[k].(string)
		return s
	}
	for _, r := range recs {
		if r.Channel != "shield" {
			continue
		}
		learn := r.Event == "learned" || r.Event == "seen" || r.Event == "dns-forwarded"
		if !learn && r.Reason != "not-allowlisted" {
			continue
		}
		switch r.Event {
		case "seen":
			if d, ok := ruleset.ValidDomain(str(r, "name")); ok {
				names[d] += count(r)
			}
		case "dns-forwarded":
			// Interactive mode's unlisted names: only those that
			// resolved to an address are a destination (a tunnel's
			// NXDOMAIN names are not).
			if q := str(r, "qtype"); q != "A" && q != "AAAA" {
				continue
			}
			if as, ok := r.Fields["addrs"].([]any); !ok || len(as) == 0 {
				continue
			}
			if d, ok := ruleset.ValidDomain(str(r, "name")); ok {
				names[d] += count(r)
			}
		case "dns-refused":
			if q := str(r, "qtype"); q != "A" && q != "AAAA" {
				continue
			}
			if d, ok := ruleset.ValidDomain(str(r, "name")); ok {
				names[d] += count(r)
			}
		case "refused", "learned":
			if d, ok := ruleset.ValidDomain(str(r, "name")); ok {
				names[d] += count(r)
				continue
			}
			if a, err := netip.ParseAddr(str(r, "dst")); err == nil && !ruleset.IsSpecial(a) {
				addrs[a.String()] += count(r)
			}
		}
	}
	s := Suggestion{Records: len(recs)}
	s.Entries = append(ranked(names), ranked(addrs)...)
	if len(s.Entries) > MaxSuggested {
		// Keep the most attempted overall.
		all := map[string]int{}
		for k, v := range names {
			all[k] = v
		}
		for k, v := range addrs {
			all[k] = v
		}
		sort.SliceStable(s.Entries, func(i, j int) bool { return all[s.Entries[i]] > all[s.Entries[j]] })
		s.Omitted = len(s.Entries) - MaxSuggested
		kept := map[string]bool{}
		for _, e := range s.Entries[:MaxSuggested] {
			kept[e] = true
		}
		s.Entries = nil
		for _, e := range append(ranked(names), ranked(addrs)...) {
			if kept[e] {
				s.Entries = append(s.Entries, e)
			}
		}
	}
	return s
}

func ranked(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if m[out[i]] != m[out[j]] {
			return m[out[i]] > m[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}

// Profile renders s as a profile file (docs/shield.md, Profiles): a
// comment header saying where it comes from, then one entry per line.
func (s Suggestion) Profile(container string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Suggested by terok-sandbox shield profile suggest for container %s at %s,\n", container, now.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# from %d records: names it looked up or connected to and addresses it reached\n", s.Records)
	b.WriteString("# without a name, that the shield refused as not allowlisted or learn mode let\n")
	b.WriteString("# through (private ranges, denied and quarantined destinations left out).\n")
	b.WriteString("# Every entry opens egress:\n")
	b.WriteString("# review it before saving it as a user profile.\n")
	if s.Omitted > 0 {
		fmt.Fprintf(&b, "# %d less attempted entries left out (at most %d are suggested).\n", s.Omitted, MaxSuggested)
	}
	for _, e := range s.Entries {
		b.WriteString(e + "\n")
	}
	return b.String()
}
