package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// legacyRuleset is a ruleset.nft as terok-shield 0.6.5 wrote it (bundle
// version 4, the documented layout, written here by hand and not by our
// generator): allow-set rules before the deny-set rules, unmarked DNS to
// the forwarder, and `udp/tcp sport 53 accept` in the input chain.
func legacyRuleset() string {
	return fmt.Sprintf(`table inet terok_shield {
    set allow_v4 { type ipv4_addr; flags interval; }
    set allow_v6 { type ipv6_addr; flags interval; }
    set deny_v4 { type ipv4_addr; flags interval; }
    set deny_v6 { type ipv6_addr; flags interval; }
    set gateway_v4 { type ipv4_addr; }
    set gateway_v6 { type ipv6_addr; }

    chain output {
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        ct state established,related accept
        udp dport 53 ip daddr %[1]s accept
        tcp dport 53 ip daddr %[1]s accept
        tcp dport %[2]d ip daddr @gateway_v4 accept
        tcp dport %[2]d ip6 daddr @gateway_v6 accept
        ip daddr @allow_v4 log group 100 prefix "TEROK_SHIELD_ALLOWED: " counter accept
        ip6 daddr @allow_v6 log group 100 prefix "TEROK_SHIELD_ALLOWED: " counter accept
        ip daddr @deny_v4 log group 100 prefix "TEROK_SHIELD_DENIED: " counter reject with icmpx admin-prohibited
        ip6 daddr @deny_v6 log group 100 prefix "TEROK_SHIELD_DENIED: " counter reject with icmpx admin-prohibited
        ip daddr 10.0.0.0/8 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        ip daddr 172.16.0.0/12 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        ip daddr 192.168.0.0/16 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        ip daddr 169.254.0.0/16 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        ip6 daddr fc00::/7 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        ip6 daddr fe80::/10 log group 100 prefix "TEROK_SHIELD_PRIVATE: " reject with icmpx admin-prohibited
        log group 100 prefix "TEROK_SHIELD_DENIED: " counter
        reject with icmpx admin-prohibited
    }

    chain input {
        type filter hook input priority filter; policy drop;
        iifname "lo" accept
        ct state established,related accept
        udp sport 53 accept
        tcp sport 53 accept
        drop
    }
}
add element inet terok_shield allow_v4 { %[3]s, %[4]s }
add element inet terok_shield allow_v6 { %[5]s }
add element inet terok_shield deny_v4 { %[4]s }
`, dnsV4, svcPort, allowV4, deniedV4, allowV6)
}

// fromPort53 dials the container's listener from the outside netns with
// source port 53, as anyone on the path can.
func fromPort53(tp *topo, port int) error {
	return tp.outNS.Do(func() error {
		// SO_REUSEADDR, and the server closes first (the client waits
		// for its EOF): the source port is not left in TIME_WAIT for the
		// next attempt.
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(gwV4), Port: 53},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) }); err != nil {
					return err
				}
				return serr
			}}
		c, err := d.Dial("tcp", net.JoinHostPort(ctrV4, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		return c.Close()
	})
}

// TestLegacyBundle: a 0.6.5 bundle starts under our hook. Applied as it is
// (by nft directly, the control), its input rule lets a connection from
// source port 53 into the container and its order lets a denied address
// in an allow set through; under the hook both are repaired, reported in
// hook-error.log and the audit log, and what the table allows is verified.
func TestLegacyBundle(t *testing.T) {
	tp := newTopo(t)
	var l net.Listener
	if err := tp.ctrNS.Do(func() (err error) { l, err = net.Listen("tcp", net.JoinHostPort(ctrV4, "0")); return err }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	if err := fromPort53(tp, port); err != nil {
		t.Fatalf("baseline: a connection from port 53 to the container fails without a table: %v", err)
	}

	// The control: the 0.6.5 text as it is.
	if out, err := tp.nftStdin(legacyRuleset(), "-f", "-"); err != nil {
		t.Fatalf("apply the 0.6.5 text: %v %s", err, out)
	}
	if err := fromPort53(tp, port); err != nil {
		t.Fatalf("control: the 0.6.5 input rule should let source port 53 in: %v", err)
	}
	tp.mustReach("control: denied but allowlisted, accepted by the 0.6.5 order", tp.tcp(deniedV4, appPort))
	if _, err := tp.nft("delete", "table", "inet", "terok_shield"); err != nil {
		t.Fatal(err)
	}

	dir := stateDir(t)
	writeFile(t, dir, shieldbundle.FileRuleset, legacyRuleset())
	writeFile(t, dir, shieldbundle.FileDNSTier, shieldbundle.TierDig+"\n")
	writeFile(t, dir, shieldbundle.FileUpstreamDNS, dnsV4+"\n")
	writeFile(t, dir, shieldbundle.FileProfileAllowed, allowV4+"\n"+deniedV4+"\n"+allowV6+"\n")
	writeFile(t, dir, shieldbundle.FileDenyList, deniedV4+"\n")
	var state map[string]any
	if err := json.Unmarshal(ociState(tp.pid, dir, "4"), &state); err != nil {
		t.Fatal(err)
	}
	ann := state["annotations"].(map[string]any)
	ann[shieldbundle.AnnName], ann[shieldbundle.AnnAuditEnabled] = "ctr-065", "true"
	st, _ := json.Marshal(state)
	r := runHook(t, "createRuntime", st)
	if r.code != 0 {
		t.Fatalf("hook refused the 0.6.5 bundle: %+v\n%s", r, readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog)))
	}
	log := readFile(t, filepath.Join(dir, shieldbundle.FileHookErrorLog))
	if !strings.Contains(log, "warning: started a terok-shield 0.6.5 bundle") || !strings.Contains(log, `removed the input rule "udp sport 53 accept"`) ||
		!strings.Contains(log, "moved the deny-set rules before the allow-set rules") {
		t.Fatalf("hook-error.log does not report the repair:\n%s", log)
	}
	if audit := readFile(t, filepath.Join(dir, shieldbundle.FileAudit)); !strings.Contains(audit, `"action":"compat"`) {
		t.Fatalf("no compat audit event:\n%s", audit)
	}
	listing, err := tp.nft("list", "table", "inet", "terok_shield")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(listing, "sport 53") || len(ruleset.VerifyLegacy(listing)) != 0 {
		t.Fatalf("applied table: %v\n%s", ruleset.VerifyLegacy(listing), listing)
	}
	if err := fromPort53(tp, port); err == nil {
		t.Fatal("a connection from source port 53 reached the container under the hook")
	}
	tp.mustReach("allowlisted v4", tp.tcp(allowV4, appPort))
	// (IPv6 is not checked: the 0.6.5 layout has no neighbour-discovery
	// rules, so it reaches IPv6 hosts only while their neighbour entry is
	// cached; docs/shield-hook.md, "Bundles of terok-shield 0.6.5".)
	tp.mustReject("denied inside the allow set", tp.tcp(deniedV4, appPort))
	tp.mustReject("unlisted", tp.tcp(otherV4, appPort))
	tp.mustReject("private", tp.tcp(privV4, appPort))
	tp.mustReach("service port on the gateway", tp.tcp(gwV4, svcPort))

	// Another version is still refused, and a 0.6.5 table that does
	// not enforce fails closed.
	for _, v := range []string{"3", "6"} {
		bad := []byte(strings.Replace(string(st), `"`+shieldbundle.AnnVersion+`":"4"`, `"`+shieldbundle.AnnVersion+`":"`+v+`"`, 1))
		if r := runHook(t, "createRuntime", bad); r.code == 0 {
			t.Fatalf("bundle version %s accepted", v)
		}
	}
	writeFile(t, dir, shieldbundle.FileRuleset, strings.Replace(legacyRuleset(), "        oifname \"lo\" accept\n", "        oifname \"lo\" accept\n        ip daddr 0.0.0.0/0 accept\n", 1))
	if r := runHook(t, "createRuntime", st); r.code == 0 || !strings.Contains(r.stderr, "unexpected accept rule") {
		t.Fatalf("an open 0.6.5 table was accepted: %+v", r)
	}
}
