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
	for i := 0; i < maxCNAMENames+10; i++ {
		p.admitCNAME(strings.Repeat("x", i%50+1)+"."+itoa(i)+".test", "o.test", time.Minute, now)
	}
	if len(p.cnames) != maxCNAMENames {
		t.Fatalf("%d CNAME entries, bound %d", len(p.cnames), maxCNAMENames)
	}
	// Once they expire, new names get room again.
	p.admitCNAME("late.test", "o.test", time.Minute, now.Add(2*time.Minute))
	if _, ok := p.admit("late.test", now.Add(2*time.Minute)); !ok || len(p.cnames) != 1 {
		t.Fatalf("expired entries not reclaimed: %d", len(p.cnames))
	}
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
