package hook_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/shieldbundle"
)

// TestResolverRateLimit: a burst of distinct listed names (each one a
// cache miss) past the forwarding bucket gets SERVFAIL from the resolver
// itself; the upstream sees no more queries than the bucket allowed over
// the run's duration, and dns.log counts the refused ones.
func TestResolverRateLimit(t *testing.T) {
	tp := newTopo(t)
	up := startTestUpstream(t, tp)
	wc, err := dns.NewRR("x." + nameListed + ". 60 IN A " + allowV4)
	if err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	up.wildcard = wc
	up.mu.Unlock()
	dir := stateDir(t)
	resolverBundle(t, dir)
	// The bucket fills from the resolver's start: the bound counts from
	// before it.
	start := time.Now()
	startedResolver(t, tp, dir)

	// The resolver's bucket (resolver.forwardRate, forwardBurst).
	const rate, burst, queries = 200, 400, 1500
	before := up.total()
	servfail, ok := 0, 0
	for i := 0; i < queries; i++ {
		m, err := tp.query("127.0.0.1", fmt.Sprintf("r%d.%s", i, nameListed), dns.TypeA, "udp")
		if err != nil {
			t.Fatal(err)
		}
		switch m.Rcode {
		case dns.RcodeSuccess:
			ok++
		case dns.RcodeServerFailure:
			servfail++
		default:
			t.Fatalf("query %d: %s", i, dns.RcodeToString[m.Rcode])
		}
	}
	elapsed := time.Since(start)
	sent := up.total() - before
	allowed := burst + int(elapsed.Seconds()*rate) + 1
	t.Logf("%d queries, %s since the start: %d answered, %d SERVFAIL, %d upstream (bucket allows %d)", queries, elapsed.Round(time.Millisecond), ok, servfail, sent, allowed)
	if servfail == 0 {
		t.Errorf("no query was rate-limited")
	}
	if ok > allowed || sent > allowed {
		t.Errorf("%d answered, %d upstream queries: over the %d the bucket allows", ok, sent, allowed)
	}
	log := readFile(t, filepath.Join(dir, shieldbundle.FileDNSLog))
	if !strings.Contains(log, "msg=rate-limited") {
		t.Errorf("rate-limited queries not counted in dns.log:\n%s", log)
	}
}
