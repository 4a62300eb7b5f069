package nftnl_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/shield-hook/internal/nftnl"
	"terok.dev/sandbox/shield-hook/internal/nsexec"
	"terok.dev/sandbox/shield-hook/internal/nstest"
	"terok.dev/sandbox/shield-hook/internal/testaddrs"
)

// scratchNS is a throw-away network namespace (ip netns), so both ways of
// applying run against the real kernel without touching the host.
type scratchNS struct {
	name string
	ns   *nsexec.NS
}

func newScratch(t testing.TB, tag string) *scratchNS {
	t.Helper()
	n := nstest.New(t, fmt.Sprintf("hknl-%d-%s", os.Getpid(), tag))
	return &scratchNS{name: n.Name, ns: n.NS}
}

func (s *scratchNS) nft(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", s.name, "nft"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	// Standard output only: nft warns on standard error about a table
	// holding an xtables target (the queue fallback of interactive mode).
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nft %v: %v\n%s%s", args, err, out, stderr.String())
	}
	return string(out)
}

// nativeQueue reports whether the kernel takes nft's queue expression
// (nft -c checks a batch with the kernel without committing it). Debian's
// kernels have nft_queue; a kernel built without CONFIG_NFT_QUEUE does not,
// and the plan then falls back to the xtables NFQUEUE target.
func (s *scratchNS) nativeQueue() bool {
	cmd := exec.Command("ip", "netns", "exec", s.name, "nft", "-c", "-f", "-")
	cmd.Stdin = strings.NewReader("table inet terok_probe {\n    chain c {\n        " + ruleset.QueueStmt + "\n    }\n}\n")
	return cmd.Run() == nil
}

// nftText is what nft -f is given for text on this kernel: without native
// queue support the queue verdicts are swapped for drop (the netlink
// listing is swapped the same way before the comparison, see
// fromCompat).
func (s *scratchNS) nftText(text string, native bool) string {
	if native {
		return text
	}
	return strings.ReplaceAll(text, " "+ruleset.QueueStmt+"\n", " drop\n")
}

// fromCompat is a listing of the netlink-made table with the queue
// verdicts as nftText writes them for nft.
func fromCompat(listing string, native bool) string {
	if native {
		return listing
	}
	return strings.ReplaceAll(listing, " "+ruleset.QueueStmt+"\n", " drop\n")
}

// apply runs the netlink path the way the hook does: the socket is made
// inside the namespace (OpenIn), the batch and the read-back run on the
// test's goroutine, which stays in the host's namespace.
func (s *scratchNS) apply(p *nftnl.Plan) ([]string, error) {
	c, sndbuf, closeFn, err := nftnl.OpenIn(s.ns)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	if err := p.Apply(c, sndbuf); err != nil {
		return nil, err
	}
	return p.Verify(c)
}

func (s *scratchNS) conn(t testing.TB, fn func(c *nftnl.Conn)) {
	t.Helper()
	c, _, closeFn, err := nftnl.OpenIn(s.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	fn(c)
}

// digSlirpPlan is the plan of the rendered "dig tier slirp" case.
func digSlirpPlan(t *testing.T) *nftnl.Plan {
	t.Helper()
	text, _, _ := equivCases()["dig tier slirp"].Render()
	parsed, ok := ruleset.ParseScript(text)
	if !ok {
		t.Fatal("not parsed")
	}
	plan, err := nftnl.NewPlan(parsed, nil)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// TestOpenInStaysInTheNamespace: the connection OpenIn returns acts on the
// namespace it was opened in, not on the namespace of the goroutine that
// uses it (the test's, i.e. the host's): the table lands in the scratch
// namespace only, through every operation the hook uses.
func TestOpenInStaysInTheNamespace(t *testing.T) {
	s := newScratch(t, "oi")
	plan := digSlirpPlan(t)
	hostHasTable := func() bool {
		return exec.Command("nft", "list", "table", ruleset.Family, ruleset.Table).Run() == nil
	}
	if hostHasTable() {
		t.Skip("the host namespace already holds a terok_shield table")
	}
	// Twice: a new table, then the replacement of a leftover one.
	for i := 0; i < 2; i++ {
		if verrs, err := s.apply(plan); err != nil || len(verrs) > 0 {
			t.Fatalf("apply %d: %v %v", i, err, verrs)
		}
		if hostHasTable() {
			_ = exec.Command("nft", "delete", "table", ruleset.Family, ruleset.Table).Run()
			t.Fatal("the table landed in the host's namespace")
		}
		if !strings.Contains(s.nft(t, "", "list", "table", ruleset.Family, ruleset.Table), "chain output") {
			t.Fatal("no table in the scratch namespace")
		}
	}
}

var expiresRe = regexp.MustCompile(` expires [0-9dhms]+`)

// listing is the full table (elements included) with element expiry
// (a countdown) removed.
func (s *scratchNS) listing(t testing.TB) string {
	return expiresRe.ReplaceAllString(s.nft(t, "", "list", "table", ruleset.Family, ruleset.Table), "")
}

func nftTransaction(text string, gateways []string) string {
	return fmt.Sprintf("table %s %s\ndelete table %s %s\n", ruleset.Family, ruleset.Table, ruleset.Family, ruleset.Table) +
		text + ruleset.AddElements(ruleset.KindGateway, gateways, false)
}

// equivCases: both modes, pasta (host-loopback rules) and slirp4netns
// (none), interactive, IPv4 and IPv6 forwarders, learned (dns set)
// elements, and allowlists with CIDRs (special ranges included), adjacent
// and nested ranges, the top of the address space, and 1,000 and 5,000
// entries.
func equivCases() map[string]ruleset.Script {
	ports := []int{9418, 18731, 18732}
	mixed := []string{"198.51.100.7", "203.0.113.0/25", "203.0.113.128/25", "198.51.100.0/30", "2001:db8::1",
		"2001:db8:1::/48", "2001:db8:2::/48", "255.255.255.255", "240.0.0.0/4", "ffff::/16", "0.0.0.0/8", "10.20.0.0/16"}
	learned := []string{"203.0.113.200", "198.51.100.77", "2001:db8:9::1", "2001:db8:9::2"}
	deny := []string{"198.51.100.9", "203.0.113.64/26", "2001:db8::dead"}
	slirp := ruleset.Options{DNS: ruleset.SlirpDNS, LoopbackPorts: ports}
	pasta := ruleset.Options{DNS: ruleset.PastaDNS, LoopbackPorts: ports, HostLoopback: ruleset.PastaHostLoopback}
	v6fwd := ruleset.Options{DNS: "2001:db8::53", LoopbackPorts: ports}
	gws := ruleset.SlirpGateways()
	return map[string]ruleset.Script{
		"slirp, profile only":         {Options: slirp, Gateways: gws},
		"slirp, learned and live":     {Options: slirp, Allow: mixed, Learned: learned, Deny: deny, Gateways: gws},
		"dig tier slirp":              {Options: slirp, Allow: mixed, Deny: deny, Gateways: gws},
		"pasta":                       {Options: pasta, Allow: mixed, Learned: learned},
		"pasta learned only":          {Options: pasta, Learned: learned[:1]},
		"v6 forwarder":                {Options: v6fwd, Allow: mixed, Learned: learned, Gateways: gws},
		"slirp v6 forwarder":          {Options: ruleset.Options{DNS: ruleset.SlirpDNSV6, LoopbackPorts: ports}, Allow: append([]string{"10.0.0.0/8", "fc00::/7"}, mixed...), Gateways: gws},
		"interactive v6 dns no ports": {Options: ruleset.Options{DNS: "2001:db8::53", Interactive: true}, Allow: mixed},
		"learn slirp":                 {Options: ruleset.Options{DNS: ruleset.SlirpDNS, Learn: true, LoopbackPorts: ports[:1]}, Allow: mixed[:3], Learned: learned, Gateways: ruleset.SlirpGateways()},
		"interactive pasta":           {Options: ruleset.Options{DNS: ruleset.PastaDNS, Interactive: true, LoopbackPorts: ports[:1], HostLoopback: ruleset.PastaHostLoopback}, Allow: mixed[:3], Learned: learned},
		"bypass":                      {Options: slirp, Bypass: true, Allow: mixed, Learned: learned, Gateways: gws},
		"bypass pasta":                {Options: pasta, Bypass: true, Allow: mixed},
		"bypass all":                  {Options: pasta, Bypass: true, AllowAll: true},
		"bypass all v6 forwarder":     {Options: v6fwd, Bypass: true, AllowAll: true, Learned: learned, Gateways: gws},
		"1000 entries":                {Options: slirp, Allow: testaddrs.Allowlist(1000), Gateways: gws},
		"1000 learned":                {Options: slirp, Learned: learnedN(1000), Gateways: gws},
		"5000 entries":                {Options: pasta, Allow: testaddrs.Allowlist(5000), Deny: testaddrs.Allowlist(50)[40:]},
	}
}

// learnedN is n addresses of the documentation ranges, which are not
// special (testaddrs.Allowlist's 198.18.0.0/15 is: benchmarking).
func learnedN(n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if i%2 == 0 && i/2 < 254 {
			out = append(out, fmt.Sprintf("203.0.113.%d", i/2+1))
		} else {
			out = append(out, fmt.Sprintf("2001:db8:a::%x", i+1))
		}
	}
	return out
}

// TestNetlinkEquivalentToNft applies each case once with nft -f and once
// over netlink (each time over a leftover table, as on a container
// restart) and requires identical `nft list table` output, elements
// included, and a clean read-back verification.
//
// Interactive cases on a kernel without nft_queue: nft cannot write the
// xtables target the plan then uses, so nft applies the text with drop
// for the queue verdicts and the netlink listing is compared with the
// queue verdicts read as drop; the netlink listing itself must show the
// queue without bypass and pass ruleset.VerifyHook.
func TestNetlinkEquivalentToNft(t *testing.T) {
	s := newScratch(t, "eq")
	native := s.nativeQueue()
	discovered := []string{"10.0.2.2", "fd00::2"}
	for name, sc := range equivCases() {
		t.Run(name, func(t *testing.T) {
			text, skipped, err := sc.Render()
			if err != nil || len(skipped) > 0 {
				t.Fatal(err, skipped)
			}
			parsed, ok := ruleset.ParseScript(text)
			if !ok {
				t.Fatal("generator output not parsed")
			}
			s.nft(t, nftTransaction(s.nftText(text, native), discovered), "-f", "-")
			want := s.listing(t)
			plan, err := nftnl.NewPlan(parsed, discovered)
			if err != nil {
				t.Fatal(err)
			}
			verrs, err := s.apply(plan)
			if err != nil {
				t.Fatal(err)
			}
			if len(verrs) > 0 {
				t.Fatalf("verification: %v", verrs)
			}
			got := s.listing(t)
			if sc.Interactive {
				wantForm := nftnl.QueueNative
				if !native {
					wantForm = nftnl.QueueCompat
				}
				if plan.Queue() != wantForm {
					t.Fatalf("queue form %s, want %s", plan.Queue(), wantForm)
				}
				if n := strings.Count(got, " counter packets 0 bytes 0 "+ruleset.QueueStmt+"\n") +
					strings.Count(got, " counter packets 0 bytes 0 queue to 100\n"); n != len(ruleset.QueueMatches()) {
					t.Fatalf("%d queue rules listed, want %d:\n%s", n, len(ruleset.QueueMatches()), got)
				}
				if errs := ruleset.VerifyHook(got, true); len(errs) > 0 {
					t.Fatalf("listing of the %s table fails VerifyHook: %v\n%s", plan.Queue(), errs, got)
				}
				got = fromCompat(got, native)
			}
			if got != want {
				t.Fatalf("netlink result differs from nft -f:\n--- netlink\n%s\n--- nft\n%s", got, want)
			}
			// And the other way round: nft over the netlink-made table.
			s.nft(t, nftTransaction(s.nftText(text, native), discovered), "-f", "-")
			if got := s.listing(t); got != want {
				t.Fatalf("nft over the netlink table differs:\n%s", got)
			}
		})
	}
}

// TestVerifyDetectsDifferences: the read-back notices every kind of
// difference between the plan and the kernel's table.
func TestVerifyDetectsDifferences(t *testing.T) {
	s := newScratch(t, "vf")
	plan := digSlirpPlan(t)
	tampers := map[string]string{
		"extra accept rule":  "insert rule inet terok_shield output ip daddr 203.0.113.50 accept\n",
		"rule replaced":      "flush chain inet terok_shield input\nadd rule inet terok_shield input accept\n",
		"policy accept":      "chain inet terok_shield output { policy accept; }\n",
		"extra chain":        "add chain inet terok_shield sneaky { type filter hook output priority -10; policy accept; }\n",
		"extra set":          "add set inet terok_shield extra { type ipv4_addr; }\n",
		"output flushed":     "flush chain inet terok_shield output\n",
		"log prefix changed": "flush chain inet terok_shield input\nadd rule inet terok_shield input iifname \"lo\" accept\nadd rule inet terok_shield input ct state established,related accept\nadd rule inet terok_shield input icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept\nadd rule inet terok_shield input log prefix \"x\" drop\n",
	}
	for name, tamper := range tampers {
		t.Run(name, func(t *testing.T) {
			if verrs, err := s.apply(plan); err != nil || len(verrs) > 0 {
				t.Fatalf("clean apply: %v %v", err, verrs)
			}
			cmd := exec.Command("ip", "netns", "exec", s.name, "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(tamper)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("tamper: %v %s", err, out)
			}
			var verrs []string
			s.conn(t, func(c *nftnl.Conn) {
				var err error
				if verrs, err = plan.Verify(c); err != nil {
					t.Fatal(err)
				}
			})
			if len(verrs) == 0 {
				t.Fatal("difference not detected")
			}
		})
	}
}
