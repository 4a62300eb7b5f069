package ruleset

import (
	"fmt"
	"strings"
)

// StateQuarantine: the quarantine table of `shield quarantine` is live.
const StateQuarantine State = "quarantine"

// quarantineOutput and quarantineInput are the rules of the quarantine
// table (docs/shield-hook.md, "Quarantine"), in the normalised form the
// listing parser produces, which is also the form rendered.
var (
	quarantineOutput = []string{
		`oifname "lo" udp dport 53 ` + logStmt(PrefixDenied) + ` counter ` + RejectStmt,
		`oifname "lo" tcp dport 53 ` + logStmt(PrefixDenied) + ` counter ` + RejectStmt,
		`oifname "lo" accept`,
		logStmt(PrefixDenied) + ` counter`,
		RejectStmt,
	}
	quarantineInput = []string{`iifname "lo" accept`, `drop`}
)

// Quarantine renders the table of `shield quarantine` (docs/shield-hook.md,
// "Quarantine"): every packet that leaves the container is refused, the
// DNS forwarder and the host services included, and so is every packet of
// a connection established before (no conntrack accept in either chain).
// Only traffic of the container with itself passes, except DNS to its own
// resolver, which is refused too so that a lookup fails at once instead of
// waiting for an upstream that cannot be reached. Refusals are logged to
// NFLOG with the DENIED prefix like the enforcing table's terminal rule
// (the state directory's quarantine marker tells a reader why).
//
// The sets of the enforcing table are declared, unused: the gateway
// elements the hook adds, the learned addresses the resolver puts back
// after a table replacement and the elements of `shield allow`/`deny`
// land in them without effect, and none of those steps fails.
func Quarantine() string {
	var b strings.Builder
	setDecls(&b, true)
	b.WriteString("    chain output {\n        type filter hook output priority filter; policy drop;\n")
	for _, r := range quarantineOutput {
		fmt.Fprintf(&b, "        %s\n", r)
	}
	b.WriteString("    }\n\n    chain input {\n        type filter hook input priority filter; policy drop;\n")
	for _, r := range quarantineInput {
		fmt.Fprintf(&b, "        %s\n", r)
	}
	b.WriteString("    }\n}\n")
	return b.String()
}

// VerifyQuarantine checks a listing (or the rendered text) against the
// quarantine table: both chains drop-policy base chains holding exactly
// the quarantine rules, no other chain. Sets and their elements do not
// matter: no rule refers to them. An empty result means the container is
// quarantined.
func VerifyQuarantine(listing string) []string {
	t := parse(listing)
	var errs []string
	if strings.TrimSpace(strings.SplitN(t.text, "\n", 2)[0]) != tableHeader {
		return []string{"table inet terok_shield missing"}
	}
	for _, c := range []struct {
		name, hook string
		rules      []string
	}{{"output", "output", quarantineOutput}, {"input", "input", quarantineInput}} {
		ch := t.chains[c.name]
		if ch == nil {
			errs = append(errs, c.name+" chain missing")
			continue
		}
		if hookOK, policyOK := ch.hasHeader(c.hook, "drop"); !hookOK || !policyOK {
			errs = append(errs, fmt.Sprintf("%s chain is not a drop-policy %s hook", c.name, c.hook))
		}
		if strings.Join(ch.rules, "\n") != strings.Join(c.rules, "\n") {
			errs = append(errs, fmt.Sprintf("%s chain rules differ from the quarantine rules", c.name))
		}
	}
	for _, name := range t.order {
		if name != "output" && name != "input" {
			errs = append(errs, fmt.Sprintf("unexpected chain %s", name))
		}
	}
	return errs
}
