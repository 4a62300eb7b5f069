package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
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
	const rate, burst, queries, workers = 200, 400, 1500, 8
	before := up.total()
	// Several clients, each on its own socket of the container's netns
	// (opened once, not a netns thread per query): one client at a time
	// on a loaded machine may ask more slowly than the bucket's rate, and
	// then nothing is limited.
	conns := make([]net.Conn, workers)
	if err := tp.ctrNS.Do(func() error {
		for w := range conns {
			c, err := net.Dial("udp", "127.0.0.1:53")
			if err != nil {
				return err
			}
			conns[w] = c
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	servfail, ok := 0, 0
	var errs []error
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Add(1)
		go func(w int, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			cl := &dns.Client{Net: "udp", Timeout: 3 * time.Second, UDPSize: 1232}
			co := &dns.Conn{Conn: c, UDPSize: 1232}
			for i := w; i < queries; i += workers {
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(fmt.Sprintf("r%d.%s", i, nameListed)), dns.TypeA)
				m.SetEdns0(1232, false)
				r, _, err := cl.ExchangeWithConn(m, co)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("query %d: %w", i, err))
				case r.Rcode == dns.RcodeSuccess:
					ok++
				case r.Rcode == dns.RcodeServerFailure:
					servfail++
				default:
					errs = append(errs, fmt.Errorf("query %d: %s", i, dns.RcodeToString[r.Rcode]))
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}(w, c)
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
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
