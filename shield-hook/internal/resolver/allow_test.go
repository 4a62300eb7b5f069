package resolver

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		ok      bool
		tooLong bool
	}{
		{"GitHub.COM.", "github.com", true, false},
		{"api.github.com", "api.github.com", true, false},
		{"_srv._tcp.example.org.", "_srv._tcp.example.org", true, false},
		{".", "", true, false},
		{`evil\.github.com.`, "", false, false},
		{`a\000b.github.com.`, "", false, false},
		{"a b.github.com.", "", false, false},
		{"..github.com", "", false, false},
		{"ünicode.github.com.", "", false, false},
		{strings.Repeat("a.", 126) + "b.", strings.Repeat("a.", 126) + "b", true, false},
		{strings.Repeat("a.", 127) + ".", "", false, true},
	}
	for _, tc := range tests {
		got, ok, tooLong := normalizeName(tc.in)
		if got != tc.want || ok != tc.ok || tooLong != tc.tooLong {
			t.Errorf("normalizeName(%q) = %q %v %v, want %q %v %v", tc.in, got, ok, tooLong, tc.want, tc.ok, tc.tooLong)
		}
	}
}

func TestDomainMatch(t *testing.T) {
	s := newDomainSet([]string{"github.com", "*.Example.org", "api.test.net", "not a domain", "com"})
	tests := []struct {
		name, origin string
		ok           bool
	}{
		{"github.com", "github.com", true},
		{"api.github.com", "github.com", true},
		{"a.b.c.github.com", "github.com", true},
		{"evilgithub.com", "", false},
		{"github.com.evil.test", "", false},
		{"example.org", "example.org", true}, // "*." is stripped: the domain and its subdomains
		{"www.example.org", "example.org", true},
		{"test.net", "", false},
		{"api.test.net", "api.test.net", true},
		{"x.api.test.net", "api.test.net", true},
		{"com", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		o, ok := s.match(tc.name)
		if o != tc.origin || ok != tc.ok {
			t.Errorf("match(%q) = %q %v, want %q %v", tc.name, o, ok, tc.origin, tc.ok)
		}
	}
}

func TestPolicyCNAMEAndReload(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := newPolicy([]string{"listed.test"}, false)
	if _, ok := p.admit("cdn.other.test", now); ok {
		t.Fatal("unlisted name admitted")
	}
	p.admitCNAME("cdn.other.test", "listed.test", 300*time.Second, now)
	p.admitCNAME("www.listed.test", "listed.test", 300*time.Second, now) // listed anyway: no entry
	if len(p.cnames) != 1 {
		t.Fatalf("cname entries %v", p.cnames)
	}
	if o, ok := p.admit("cdn.other.test", now.Add(299*time.Second)); !ok || o != "listed.test" {
		t.Fatalf("CNAME target not admitted during its TTL: %q %v", o, ok)
	}
	if _, ok := p.admit("sub.cdn.other.test", now); ok {
		t.Fatal("a CNAME target admits only itself, not its subdomains")
	}
	if _, ok := p.admit("cdn.other.test", now.Add(300*time.Second)); ok {
		t.Fatal("CNAME target admitted after its TTL")
	}
	p.admitCNAME("cdn.other.test", "listed.test", time.Hour, now)
	p.replace([]string{"else.test"}, false)
	if _, ok := p.admit("cdn.other.test", now); ok {
		t.Fatal("CNAME admission survived the removal of its origin")
	}
	p.replace([]string{"else.test"}, true)
	if o, ok := p.admit("anything.invalid", now); !ok || o != originOpen {
		t.Fatalf("open marker: %q %v", o, ok)
	}
	if !p.stillAllowed(originOpen) || !p.stillAllowed("x.else.test") || p.stillAllowed("listed.test") {
		t.Fatal("stillAllowed under the open marker")
	}
	p.replace([]string{"else.test"}, false)
	if p.stillAllowed(originOpen) {
		t.Fatal("open origin allowed after the marker went")
	}
}

func TestCNAMEBound(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := newPolicy(nil, false)
	// Many origins, one admission each second per batch: only the table's
	// own bound applies.
	for i := 0; i < maxCNAMENames+10; i++ {
		at := now.Add(time.Duration(i/maxCNAMEPerSecond) * time.Second)
		p.admitCNAME(strings.Repeat("x", i%50+1)+"."+itoa(i)+".test", "o"+itoa(i%1000)+".test", time.Hour, at)
	}
	if len(p.cnames) != maxCNAMENames {
		t.Fatalf("%d CNAME entries, bound %d", len(p.cnames), maxCNAMENames)
	}
	// Once they expire, new names get room again.
	later := now.Add(3 * time.Hour)
	p.admitCNAME("late.test", "o.test", time.Minute, later)
	if _, ok := p.admit("late.test", later); !ok || len(p.cnames) != 1 {
		t.Fatalf("expired entries not reclaimed: %d", len(p.cnames))
	}
}

// TestCNAMELimits: per listed origin at most maxCNAMEPerOrigin live
// admissions, at most maxCNAMEPerSecond new ones a second, none for TTL 0,
// and a live entry's origin is not taken over by another origin.
func TestCNAMELimits(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	count := func(p *policy, at time.Time) int {
		n := 0
		for name := range p.cnames {
			if _, ok := p.admit(name, at); ok {
				n++
			}
		}
		return n
	}
	t.Run("per origin", func(t *testing.T) {
		p := newPolicy([]string{"listed.test"}, false)
		for i := 0; i < 40; i++ {
			p.admitCNAME("hop"+itoa(i)+".evil.test", "listed.test", time.Minute, now.Add(time.Duration(i)*time.Second))
		}
		at := now.Add(40 * time.Second)
		if n := count(p, at); n != maxCNAMEPerOrigin {
			t.Fatalf("%d live admissions of one origin, want %d", n, maxCNAMEPerOrigin)
		}
		// The oldest expire, room again.
		after := now.Add(2 * time.Minute)
		p.admitCNAME("fresh.evil.test", "listed.test", time.Minute, after)
		if _, ok := p.admit("fresh.evil.test", after); !ok {
			t.Fatal("no admission after the others expired")
		}
	})
	t.Run("per second", func(t *testing.T) {
		p := newPolicy(nil, false)
		for i := 0; i < 3*maxCNAMEPerSecond; i++ {
			p.admitCNAME("n"+itoa(i)+".test", "o"+itoa(i)+".test", time.Minute, now)
		}
		if n := len(p.cnames); n != maxCNAMEPerSecond {
			t.Fatalf("%d admissions in one second, want %d", n, maxCNAMEPerSecond)
		}
		p.admitCNAME("next.test", "o.test", time.Minute, now.Add(time.Second))
		if _, ok := p.admit("next.test", now.Add(time.Second)); !ok {
			t.Fatal("no admission in the next second")
		}
	})
	t.Run("ttl 0", func(t *testing.T) {
		p := newPolicy(nil, false)
		p.admitCNAME("zero.test", "o.test", 0, now)
		if len(p.cnames) != 0 {
			t.Fatalf("TTL 0 admitted %v", p.cnames)
		}
	})
	t.Run("origin kept", func(t *testing.T) {
		p := newPolicy(nil, false)
		p.admitCNAME("cdn.test", "a.test", time.Minute, now)
		p.admitCNAME("cdn.test", "b.test", time.Hour, now)
		if e := p.cnames["cdn.test"]; e.origin != "a.test" || e.expires != now.Add(time.Minute) {
			t.Fatalf("entry %+v, want a.test's, unchanged", e)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestClampTTL(t *testing.T) {
	lo, hi := time.Duration(ruleset.LearnedMinTTLSeconds)*time.Second, time.Duration(ruleset.LearnedMaxTTLSeconds)*time.Second
	for _, tc := range []struct {
		ttl  uint32
		want time.Duration
	}{{0, lo}, {1, lo}, {299, lo}, {300, lo}, {301, 301 * time.Second}, {3600, time.Hour}, {86400, hi}, {86401, hi}, {^uint32(0), hi}} {
		if got := clampTTL(tc.ttl); got != tc.want {
			t.Errorf("clampTTL(%d) = %s, want %s", tc.ttl, got, tc.want)
		}
	}
}
