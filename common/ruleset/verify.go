package ruleset

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// State is the classification of a container's live ruleset (§8).
type State string

const (
	StateInactive State = "inactive" // no table (or container not running)
	StateUp       State = "up"       // enforcing
	StateDown     State = "down"     // bypass, private ranges still rejected
	StateDownAll  State = "down_all" // bypass, everything allowed
	StateError    State = "error"    // a table that is neither
)

// Classify maps the output of `nft list table inet terok_shield` (empty on
// failure) to a State, in the order of the §8 table.
func Classify(listing string) State {
	switch {
	case strings.TrimSpace(listing) == "":
		return StateInactive
	case len(VerifyBypass(listing, false)) == 0:
		return StateDown
	case len(VerifyBypass(listing, true)) == 0:
		return StateDownAll
	case len(VerifyHook(listing, false)) == 0, len(VerifyHook(listing, true)) == 0:
		return StateUp
	default:
		return StateError
	}
}

// chain is one chain of the listed table.
type chain struct {
	header []string // "type …; policy …;" lines
	rules  []string // normalised rule lines, in order
}

type table struct {
	text   string // the table's block (or the whole input when not found)
	chains map[string]*chain
	order  []string
}

// verifyRegexps are the listing parser's and VerifyHook's expressions,
// compiled on first use (see validRes).
type verifyRegexps struct {
	counter, handle, logOrder, space, chain, table, terminalLog *regexp.Regexp
	hookAccept                                                  []*regexp.Regexp
	// privateV4/privateV6 match the reject rule of each private range, in
	// the order of PrivateV4/PrivateV6.
	privateV4, privateV6 []*regexp.Regexp
}

var verifyRes = sync.OnceValue(func() (r verifyRegexps) {
	r.counter = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)
	r.handle = regexp.MustCompile(`\s*# handle [0-9]+$`)
	r.logOrder = regexp.MustCompile(`log prefix ("[^"]*") group ([0-9]+)`)
	r.space = regexp.MustCompile(`\s+`)
	r.chain = regexp.MustCompile(`^chain ([A-Za-z0-9_.-]+) \{$`)
	r.table = regexp.MustCompile(`^table inet terok_shield \{$`)
	r.terminalLog = regexp.MustCompile(`(?m)^\s*log\s+.*prefix\s+"TEROK_SHIELD_DENIED`)
	// Output-chain rules allowed to carry an accept verdict in hook mode.
	// Anything else that accepts is an error: the table must not contain a
	// hole the generator never writes.
	r.hookAccept = []*regexp.Regexp{
		regexp.MustCompile(`^oifname "lo" accept$`),
		regexp.MustCompile(`^ct state established,related accept$`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[0])) + `$`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(strings.TrimSpace(strings.Split(ndOutput, "\n")[1])) + `$`),
		regexp.MustCompile(`^(udp|tcp) dport 53 (ip|ip6) daddr ` + addrPat + ` accept$`),
		regexp.MustCompile(`^tcp dport [0-9]{1,5} (ip daddr @gateway_v4|ip6 daddr @gateway_v6|ip daddr 169\.254\.1\.2) accept$`),
		regexp.MustCompile(`^ip daddr @allow_v4 ` + logPat(PrefixAllowed) + ` counter accept$`),
		regexp.MustCompile(`^ip6 daddr @allow_v6 ` + logPat(PrefixAllowed) + ` counter accept$`),
	}
	for _, p := range PrivateV4() {
		r.privateV4 = append(r.privateV4, regexp.MustCompile(`ip daddr `+regexp.QuoteMeta(p)+`.*reject`))
	}
	for _, p := range PrivateV6() {
		r.privateV6 = append(r.privateV6, regexp.MustCompile(`ip6 daddr `+regexp.QuoteMeta(p)+`.*reject`))
	}
	return r
})

// normRule puts a listed rule into the form this package generates: nft
// lists `log prefix "P" group 100` and `counter packets N bytes M`.
func normRule(r string) string {
	res := verifyRes()
	r = res.handle.ReplaceAllString(r, "")
	r = res.space.ReplaceAllString(strings.TrimSpace(r), " ")
	r = res.counter.ReplaceAllString(r, "counter")
	return res.logOrder.ReplaceAllString(r, "log group $2 prefix $1")
}

// parse extracts the terok_shield table's chains from a listing. Sets are
// skipped; braces are counted so multi-line element lists do not confuse it.
func parse(listing string) table {
	t := table{text: listing, chains: map[string]*chain{}}
	lines := strings.Split(listing, "\n")
	start, end := -1, -1
	depth := 0
	for i, raw := range lines {
		l := strings.TrimSpace(raw)
		if start < 0 {
			if verifyRes().table.MatchString(l) {
				start, depth = i, 1
			}
			continue
		}
		depth += strings.Count(l, "{") - strings.Count(l, "}")
		if depth <= 0 {
			end = i
			break
		}
	}
	if start < 0 {
		return t
	}
	if end < 0 {
		end = len(lines) - 1
	}
	block := lines[start : end+1]
	t.text = strings.Join(block, "\n")
	depth = 0
	var cur *chain
	for _, raw := range block[1:] {
		l := strings.TrimSpace(raw)
		before := depth
		depth += strings.Count(l, "{") - strings.Count(l, "}")
		if before == 0 {
			if m := verifyRes().chain.FindStringSubmatch(l); m != nil {
				cur = &chain{}
				if _, dup := t.chains[m[1]]; !dup {
					t.order = append(t.order, m[1])
				}
				t.chains[m[1]] = cur
			}
			continue
		}
		if cur == nil || before != 1 || l == "" || l == "}" {
			if depth == 0 {
				cur = nil
			}
			continue
		}
		if strings.HasPrefix(l, "type ") || strings.HasPrefix(l, "policy ") {
			cur.header = append(cur.header, verifyRes().space.ReplaceAllString(l, " "))
			continue
		}
		cur.rules = append(cur.rules, normRule(l))
		if depth == 0 {
			cur = nil
		}
	}
	return t
}

func (c *chain) hasHeader(hook, policy string) (hookOK, policyOK bool) {
	for _, h := range c.header {
		if strings.Contains(h, "hook "+hook+" ") {
			hookOK = true
		}
		if strings.Contains(h, "policy "+policy+";") {
			policyOK = true
		}
	}
	return
}

func privateChecks(text string, errs []string) []string {
	res := verifyRes()
	for i, r := range PrivateV4() {
		if !res.privateV4[i].MatchString(text) {
			errs = append(errs, fmt.Sprintf("Private-range reject rule for %s missing", r))
		}
	}
	for i, r := range PrivateV6() {
		if !res.privateV6[i].MatchString(text) {
			errs = append(errs, fmt.Sprintf("Private-range reject rule for %s missing", r))
		}
	}
	return errs
}

func logPat(prefix string) string {
	return `log group ` + fmt.Sprint(NFLogGroup) + ` prefix "` + prefix + `: "`
}

var (
	addrPat    = `[0-9A-Fa-f:.]+`
	inputRules = []string{`iifname "lo" accept`, `ct state established,related accept`, ndInput, `drop`}
)

func checkInput(t table, errs []string) []string {
	in := t.chains["input"]
	if in == nil {
		return errs
	}
	if hookOK, policyOK := in.hasHeader("input", "drop"); !hookOK || !policyOK {
		errs = append(errs, "input chain is not a drop-policy input hook")
	}
	if strings.Join(in.rules, "\n") != strings.Join(inputRules, "\n") {
		errs = append(errs, "input chain rules differ from loopback/established/drop")
	}
	return errs
}

func checkJumps(t table, errs []string) []string {
	for _, name := range t.order {
		if name != "output" && name != "input" {
			errs = append(errs, fmt.Sprintf("unexpected chain %s", name))
		}
		for _, r := range t.chains[name].rules {
			if strings.Contains(r, "jump ") || strings.Contains(r, "goto ") {
				errs = append(errs, fmt.Sprintf("unexpected jump in chain %s: %s", name, r))
			}
			// A queue verdict hands the packet to a userspace program that
			// may accept it: as good as an accept rule.
			if strings.HasPrefix(r, "queue") || strings.Contains(r, " queue") {
				errs = append(errs, fmt.Sprintf("unexpected queue verdict in chain %s: %s", name, r))
			}
		}
	}
	return errs
}

// VerifyHook checks a listing against the enforcing ruleset. It returns the
// §8 error strings for the minimum invariants and, beyond them, structural
// errors: hook/policy of both chains, no accept rule the generator does not
// write, deny sets before allow sets, the terminal reject last, an input
// chain of exactly loopback/established/drop, no jumps or extra chains.
// An empty result means the ruleset is enforcing.
func VerifyHook(listing string, interactive bool) []string {
	t := parse(listing)
	text := t.text
	var errs []string
	if !strings.Contains(text, "policy drop") {
		errs = append(errs, "policy is not drop")
	}
	if !strings.Contains(text, "chain output") {
		errs = append(errs, "output chain missing")
	}
	if !strings.Contains(text, "chain input") {
		errs = append(errs, "input chain missing")
	}
	if !strings.Contains(text, "admin-prohibited") {
		errs = append(errs, "reject type missing")
	}
	for _, s := range []string{SetAllowV4, SetAllowV6, SetDenyV4, SetDenyV6} {
		if !strings.Contains(text, s) {
			errs = append(errs, s+" set missing")
		}
	}
	if interactive {
		if !strings.Contains(text, PrefixQueued) {
			errs = append(errs, "queued nflog prefix missing")
		}
	} else if !verifyRes().terminalLog.MatchString(text) {
		errs = append(errs, "terminal deny-all rule missing")
	}
	errs = privateChecks(text, errs)

	out := t.chains["output"]
	if out == nil {
		return errs
	}
	if hookOK, policyOK := out.hasHeader("output", "drop"); !hookOK || !policyOK {
		errs = append(errs, "output chain is not a drop-policy output hook")
	}
	denyIdx, allowIdx := -1, -1
	for i, r := range out.rules {
		if strings.HasPrefix(r, "ip daddr @deny_v4 ") && denyIdx < 0 {
			denyIdx = i
		}
		if strings.HasPrefix(r, "ip daddr @allow_v4 ") && allowIdx < 0 {
			allowIdx = i
		}
		if strings.Contains(r, "accept") {
			ok := false
			for _, re := range verifyRes().hookAccept {
				if re.MatchString(r) {
					ok = true
					break
				}
			}
			if !ok {
				errs = append(errs, fmt.Sprintf("unexpected accept rule: %s", r))
			}
		}
	}
	if denyIdx < 0 || allowIdx < 0 || denyIdx > allowIdx {
		errs = append(errs, "deny-set rules must precede allow-set rules")
	}
	wantLast := RejectStmt
	if interactive {
		wantLast = logPat(PrefixQueued) + " counter " + RejectStmt
	}
	if n := len(out.rules); n == 0 || out.rules[n-1] != wantLast {
		errs = append(errs, "terminal reject is not the last output rule")
	}
	errs = checkInput(t, errs)
	return checkJumps(t, errs)
}

// VerifyBypass checks a listing against the bypass ruleset (§7.3); with
// allowAll the private-range rejects are not required.
func VerifyBypass(listing string, allowAll bool) []string {
	t := parse(listing)
	text := t.text
	var errs []string
	if !strings.Contains(text, "policy accept") {
		errs = append(errs, "output policy is not accept")
	}
	if !strings.Contains(text, "policy drop") {
		errs = append(errs, "input policy is not drop")
	}
	if !strings.Contains(text, "chain output") {
		errs = append(errs, "output chain missing")
	}
	if !strings.Contains(text, "chain input") {
		errs = append(errs, "input chain missing")
	}
	if !strings.Contains(text, PrefixBypass) {
		errs = append(errs, "bypass nflog prefix missing")
	}
	for _, s := range []string{SetAllowV4, SetAllowV6} {
		if !strings.Contains(text, s) {
			errs = append(errs, s+" set missing")
		}
	}
	if !allowAll {
		errs = privateChecks(text, errs)
	}
	if out := t.chains["output"]; out != nil {
		if hookOK, policyOK := out.hasHeader("output", "accept"); !hookOK || !policyOK {
			errs = append(errs, "output chain is not an accept-policy output hook")
		}
	}
	errs = checkInput(t, errs)
	return checkJumps(t, errs)
}
