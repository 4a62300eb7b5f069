package shieldlog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/runner/internal/profile"
)

func rec(event, reason string, fields map[string]any) audit.Record {
	return audit.Record{Time: t0, Channel: "shield", Event: event, Outcome: "refused", Reason: reason, Fields: fields}
}

func TestSuggest(t *testing.T) {
	recs := []audit.Record{
		rec("dns-refused", "not-allowlisted", map[string]any{"name": "api.example.test", "qtype": "A", "count": float64(3)}),
		rec("dns-refused", "not-allowlisted", map[string]any{"name": "api.example.test", "qtype": "AAAA", "count": float64(1)}),
		rec("dns-refused", "not-allowlisted", map[string]any{"name": "tunnel.example.test", "qtype": "TXT", "count": float64(50)}),
		rec("dns-refused", "not-allowlisted", map[string]any{"name": "bad name!", "qtype": "A", "count": float64(1)}),
		rec("refused", "not-allowlisted", map[string]any{"proto": "tcp", "dst": "198.51.100.20", "dport": float64(443), "count": float64(7)}),
		rec("refused", "not-allowlisted", map[string]any{"proto": "tcp", "dst": "203.0.113.9", "dport": float64(443), "name": "cdn.example.test", "count": float64(1)}),
		rec("refused", "private-range", map[string]any{"proto": "tcp", "dst": "10.0.2.2", "dport": float64(22), "count": float64(9)}),
		rec("refused", "denied", map[string]any{"proto": "tcp", "dst": "198.51.100.30", "dport": float64(80), "count": float64(9)}),
		rec("refused", "quarantine", map[string]any{"proto": "udp", "dst": "198.51.100.40", "dport": float64(53), "count": float64(9)}),
		rec("refused", "not-allowlisted", map[string]any{"count": float64(0), "dropped": float64(40)}),
		{Time: t0, Channel: "shield", Event: "action", Outcome: "ok", Fields: map[string]any{"action": "allowed", "dest": "198.51.100.50"}},
	}
	s := Suggest(recs)
	if got, want := strings.Join(s.Entries, " "), "api.example.test cdn.example.test 198.51.100.20"; got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
	text := s.Profile("demo-t1", t0)
	entries, err := profile.Parse("suggested.txt", []byte(text))
	if err != nil || len(entries) != 3 {
		t.Fatalf("the suggestion is no valid profile: %v %v\n%s", entries, err, text)
	}
	if !strings.Contains(text, "container demo-t1") {
		t.Errorf("header: %s", text)
	}
}

func TestSuggestBounded(t *testing.T) {
	var recs []audit.Record
	for i := 0; i < MaxSuggested+50; i++ {
		recs = append(recs, rec("dns-refused", "not-allowlisted", map[string]any{"name": fmt.Sprintf("q%d.flood.test", i), "qtype": "A", "count": float64(1)}))
	}
	recs = append(recs, rec("dns-refused", "not-allowlisted", map[string]any{"name": "wanted.example.test", "qtype": "A", "count": float64(20)}))
	s := Suggest(recs)
	if len(s.Entries) != MaxSuggested || s.Omitted != 51 || s.Entries[0] != "wanted.example.test" {
		t.Errorf("%d entries, %d omitted, first %q", len(s.Entries), s.Omitted, s.Entries[0])
	}
	if !strings.Contains(s.Profile("c", time.Now()), "51 less attempted entries left out") {
		t.Error("the omission is not said")
	}
}

// A learn-mode run's records: seen names and learned connections (named
// ones count for their name, unnamed ones for their address) make the
// profile; an unnamed special address never does.
func TestSuggestFromLearn(t *testing.T) {
	ok := func(event string, fields map[string]any) audit.Record {
		return audit.Record{Time: t0, Channel: "shield", Event: event, Outcome: "ok", Fields: fields}
	}
	recs := []audit.Record{
		ok("seen", map[string]any{"name": "pkg.example.test", "qtype": "A", "addrs": []any{"203.0.113.10"}, "count": float64(4)}),
		ok("seen", map[string]any{"name": "-bad-.example.test", "qtype": "A", "addrs": []any{"203.0.113.11"}, "count": float64(1)}),
		ok("learned", map[string]any{"proto": "tcp", "dst": "203.0.113.10", "dport": float64(443), "name": "pkg.example.test", "count": float64(2)}),
		ok("learned", map[string]any{"proto": "tcp", "dst": "198.51.100.77", "dport": float64(8080), "count": float64(1)}),
		ok("learned", map[string]any{"proto": "udp", "dst": "2001:db8::77", "dport": float64(443), "count": float64(3)}),
		ok("learned", map[string]any{"proto": "tcp", "dst": "10.1.2.3", "dport": float64(80), "count": float64(9)}),
	}
	s := Suggest(recs)
	if got, want := strings.Join(s.Entries, " "), "pkg.example.test 2001:db8::77 198.51.100.77"; got != want {
		t.Errorf("entries %q, want %q", got, want)
	}
	if _, err := profile.Parse("learned.txt", []byte(s.Profile("demo-t1", t0))); err != nil {
		t.Fatalf("the suggestion is no valid profile: %v", err)
	}
}

// TestSuggestForwarded: interactive mode's dns-forwarded records suggest
// the names that resolved to an address, never a tunnel's NXDOMAIN names
// nor other types.
func TestSuggestForwarded(t *testing.T) {
	s := Suggest([]audit.Record{fwdNX, fwdOK,
		{Time: t0, Channel: "shield", Event: "dns-forwarded", Outcome: "ok",
			Fields: map[string]any{"name": "txt.example.test", "qtype": "TXT", "rcode": "NOERROR", "addrs": []any{"203.0.113.41"}, "count": 5}},
	})
	if got := strings.Join(s.Entries, " "); got != "api.example.test" {
		t.Errorf("entries %q, want api.example.test only", got)
	}
}
