package ruleset

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// State is the classification of a container's live ruleset (docs/shield-hook.md, Verification and states).
type State string

const (
	StateInactive State = "inactive" // no table (or container not running)
	StateUp       State = "up"       // enforcing
	StateLearn    State = "learn"    // enforcing, but public destinations are let through and logged
	StateDown     State = "down"     // bypass, private ranges still rejected
	StateDownAll  State = "down_all" // bypass, everything allowed
	StateError    State = "error"    // a table that is neither
	// StateQuarantine (quarantine.go) is the table of `shield quarantine`.
)

// Classify maps the output of `nft list table inet terok_shield` (empty on
// failure) to a State, in the order of docs/shield-hook.md, Verification and states.
func Classify(listing string) State {
	switch {
	case strings.TrimSpace(listing) == "":
		return StateInactive
	case len(VerifyQuarantine(listing)) == 0:
		return StateQuarantine
	case len(VerifyBypass(listing, false)) == 0:
		return StateDown
	case len(VerifyBypass(listing, true)) == 0:
		return StateDownAll
	case len(VerifyHook(listing, false)) == 0, len(VerifyHook(listing, true)) == 0:
		return StateUp
	case len(VerifyLearn(listing)) == 0:
		return StateLearn
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

// verifyRegexps are VerifyHook's regular expressions, compiled on first
// use (see validRes). Every other check of a listing is a string
// comparison (tableHeader, chainName, squeezeSpace, hasDport53, the exact
// hookAccept rules): compiling the ~20 expressions those were cost ~0.5 ms
// in each process that verifies (the hook, terok-sandbox), more than
// running them (docs/shield.md, Performance).
type verifyRegexps struct {
	terminalLog *regexp.Regexp
	// marked is the resolver's DNS accept rule; reject is a logged
	// special-range (or forwarder) reject with its address or prefix in
	// group 2.
	marked, reject *regexp.Regexp
	// hookAccept are the output-chain rules allowed to carry an accept
	// verdict in hook mode; the first headAccept of them are the ones of
	// the head (docs/shield-hook.md, "The ruleset, rule by rule"), the only
	// accepts of the bypass table; the first preHead of them are the only
	// ones allowed before the forwarder reject.
	hookAccept []acceptRule
}

// acceptRule is one accepting rule the generator writes: exactly the text
// exact, or, when match is set, what it accepts.
type acceptRule struct {
	exact string
	match func(string) bool
}

func (a acceptRule) accepts(r string) bool {
	if a.match != nil {
		return a.match(r)
	}
	return r == a.exact
}

// listRes are the rewrites of nft's listing form (normRule), compiled
// only when a listing (not a generated text) needs them.
var listRes = sync.OnceValue(func() (r struct{ counter, handle, logOrder *regexp.Regexp }) {
	r.counter = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)
	r.handle = regexp.MustCompile(`\s*# handle [0-9]+$`)
	r.logOrder = regexp.MustCompile(`log prefix ("[^"]*") group ([0-9]+)`)
	return r
})

// tableHeader is the first line of the table (the expression
// ^table inet terok_shield \{$ it replaces).
const tableHeader = "table inet terok_shield {"

// chainName is the name of a chain header line "chain NAME {" whose name
// is of [A-Za-z0-9_.-] (the expression ^chain ([A-Za-z0-9_.-]+) \{$).
func chainName(l string) (string, bool) {
	name, ok := strings.CutPrefix(l, "chain ")
	if !ok {
		return "", false
	}
	if name, ok = strings.CutSuffix(name, " {"); !ok || name == "" {
		return "", false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return "", false
		}
	}
	return name, true
}

// squeezeSpace turns every run of ASCII white space (the regexp class \s)
// into one blank, trimming nothing (the expression \s+ replaced by " ").
func squeezeSpace(r string) string {
	var b strings.Builder
	b.Grow(len(r))
	space := false
	for i := 0; i < len(r); i++ {
		switch c := r[i]; c {
		case ' ', '\t', '\n', '\f', '\r':
			if !space {
				b.WriteByte(' ')
			}
			space = true
		default:
			space = false
			b.WriteByte(c)
		}
	}
	return b.String()
}

// hasDport53 reports a rule about port 53 (the expression dport 53( |$)).
func hasDport53(r string) bool {
	return strings.Contains(r, "dport 53 ") || strings.HasSuffix(r, "dport 53")
}

// isServicePortAccept is a host-service port's accept rule (the
// expression ^tcp dport [0-9]{1,5} (ip daddr @gateway_v4|ip6 daddr
// @gateway_v6|ip daddr 169.254.1.2) accept$).
func isServicePortAccept(r string) bool {
	rest, ok := strings.CutPrefix(r, "tcp dport ")
	if !ok {
		return false
	}
	n := 0
	for n < len(rest) && n < 6 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n < 1 || n > 5 {
		return false
	}
	switch rest[n:] {
	case " ip daddr @" + SetGatewayV4 + " accept", " ip6 daddr @" + SetGatewayV6 + " accept", " ip daddr " + PastaHostLoopback + " accept":
		return true
	}
	return false
}

const (
	preHead    = 2 // lo, marked DNS
	headAccept = 6 // preHead, established, two ND rules, host-service ports
)

var verifyRes = sync.OnceValue(func() (r verifyRegexps) {
	r.terminalLog = regexp.MustCompile(`(?m)^\s*log\s+.*prefix\s+"TEROK_SHIELD_DENIED`)
	markPat := `meta mark 0x` + fmt.Sprintf("%08x", ResolverMark)
	r.marked = regexp.MustCompile(`^` + markPat + ` (udp|tcp) dport 53 (ip|ip6) daddr (` + addrPat + `) accept$`)
	r.reject = regexp.MustCompile(`^(ip|ip6) daddr ([0-9A-Fa-f:./]+) ` + logPat(PrefixPrivate) + ` ` + RejectStmt + `$`)
	// Anything else that accepts is an error: the table must not contain
	// a hole the generator never writes.
	r.hookAccept = []acceptRule{
		{exact: `oifname "lo" accept`},
		{match: r.marked.MatchString},
		{exact: `ct state established,related accept`},
		{exact: strings.TrimSpace(strings.Split(ndOutput, "\n")[0])},
		{exact: strings.TrimSpace(strings.Split(ndOutput, "\n")[1])},
		{match: isServicePortAccept},
		{exact: `ip daddr @` + SetAllowV4 + ` ` + logPat(PrefixAllowed) + ` counter accept`},
		{exact: `ip6 daddr @` + SetAllowV6 + ` ` + logPat(PrefixAllowed) + ` counter accept`},
		{exact: `ip daddr @` + SetDNSV4 + ` ` + logPat(PrefixAllowed) + ` counter accept`},
		{exact: `ip6 daddr @` + SetDNSV6 + ` ` + logPat(PrefixAllowed) + ` counter accept`},
	}
	return r
})

// normRule puts a listed rule into the form this package generates: nft
// lists `log prefix "P" group 100` and `counter packets N bytes M`. Each
// rewrite runs only on rules that can need it: the regular expressions
// were most of VerifyHook's time.
func normRule(r string) string {
	if strings.Contains(r, "# handle") {
		res := listRes()
		r = res.handle.ReplaceAllString(r, "")
	}
	r = collapseSpace(r)
	if strings.Contains(r, "counter packets") {
		r = listRes().counter.ReplaceAllString(r, "counter")
	}
	if strings.Contains(r, "log prefix") {
		r = listRes().logOrder.ReplaceAllString(r, "log group $2 prefix $1")
	}
	return r
}

// collapseSpace trims r and turns every run of ASCII white space (the
// characters of the regexp class \s) into one blank.
func collapseSpace(r string) string {
	var b strings.Builder
	b.Grow(len(r))
	space := false
	for i := 0; i < len(r); i++ {
		switch c := r[i]; c {
		case ' ', '\t', '\n', '\f', '\r':
			space = b.Len() > 0
		default:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteByte(c)
		}
	}
	return b.String()
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
			if l == tableHeader {
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
			if name, ok := chainName(l); ok {
				cur = &chain{}
				if _, dup := t.chains[name]; !dup {
					t.order = append(t.order, name)
				}
				t.chains[name] = cur
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
			cur.header = append(cur.header, squeezeSpace(l))
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

// ErrOldShape is the advice added to the errors of a table written before
// closed DNS and the learned-address sets (bundle version 4 and older):
// such a table is never repaired in place, the container is started again.
const ErrOldShape = "the table predates closed DNS and the learned-address sets (shield bundle older than version 5): stop the container and run it again with this terok-sandbox to apply the current ruleset"

// oldShape reports whether t looks like a table of the previous generator,
// which declared no learned-address sets (the current rules reference
// them, so nft refuses a current table without them).
func oldShape(t table) bool {
	return !strings.Contains(t.text, "set "+SetDNSV4+" {")
}

// withAdvice appends ErrOldShape to the errors of an old-shape table.
func withAdvice(t table, errs []string) []string {
	if len(errs) > 0 && strings.Contains(t.text, "chain output") && oldShape(t) {
		errs = append(errs, ErrOldShape)
	}
	return errs
}

func acceptsBy(r string, rules []acceptRule) bool {
	for _, a := range rules {
		if a.accepts(r) {
			return true
		}
	}
	return false
}

// dnsChecks are the closed-DNS invariants of both modes: the resolver's
// marked accept pair for one forwarder address, no other rule accepting
// port 53, and the unmarked reject of the forwarder and of every other
// built-in forwarder (any protocol or port) before any accept rule other
// than lo and the marked pair — the
// conntrack accept included, which would let an unmarked socket on a
// reused source port ride one of the resolver's flows.
func dnsChecks(out *chain, errs []string) []string {
	res := verifyRes()
	fwd := map[string]string{} // proto -> "ip daddr ADDR" (or ip6)
	for _, r := range out.rules {
		if m := res.marked.FindStringSubmatch(r); m != nil {
			if prev, dup := fwd[m[1]]; dup && prev != m[2]+" daddr "+m[3] {
				errs = append(errs, fmt.Sprintf("resolver DNS accepted to two forwarders: %s and %s", prev, m[3]))
			}
			fwd[m[1]] = m[2] + " daddr " + m[3]
			continue
		}
		if hasDport53(r) && strings.Contains(r, "accept") {
			errs = append(errs, fmt.Sprintf("DNS accept rule without the resolver mark: %s", r))
		}
	}
	if fwd["udp"] == "" || fwd["tcp"] == "" {
		return append(errs, "resolver-marked DNS accept rules (udp and tcp to the forwarder) missing")
	}
	if fwd["udp"] != fwd["tcp"] {
		errs = append(errs, fmt.Sprintf("resolver DNS accepted to two forwarders: %s and %s", fwd["udp"], fwd["tcp"]))
	}
	want := fwd["udp"] + " " + logPat(PrefixPrivate) + " " + RejectStmt
	at := slices.Index(out.rules, want)
	if at < 0 {
		return append(errs, fmt.Sprintf("reject of unmarked traffic to the DNS forwarder %s missing", strings.Fields(fwd["udp"])[2]))
	}
	// The other built-in forwarders are rejected in the head as well,
	// before anything that could accept them (an explicit allow of
	// 10.0.0.0/8 or fc00::/7 included).
	last := at
	configured, err := CanonicalIP(strings.Fields(fwd["udp"])[2])
	if err != nil {
		return append(errs, fmt.Sprintf("DNS forwarder %s is not an address", strings.Fields(fwd["udp"])[2]))
	}
	for _, f := range otherForwarders(configured) {
		i := slices.Index(out.rules, addrSel(f)+" daddr "+f+" "+logPat(PrefixPrivate)+" "+RejectStmt)
		if i < 0 {
			errs = append(errs, fmt.Sprintf("reject of unmarked traffic to the built-in DNS forwarder %s missing", f))
			continue
		}
		last = max(last, i)
	}
	for _, r := range out.rules[:last] {
		if strings.Contains(r, "accept") && !acceptsBy(r, res.hookAccept[:preHead]) {
			errs = append(errs, fmt.Sprintf("rule accepts before the reject of unmarked traffic to the DNS forwarder: %s", r))
		}
	}
	return errs
}

// specialChecks requires a reject of every special range (special.go)
// and returns the index of the last one (-1 when none).
func specialChecks(out *chain, errs []string) ([]string, int) {
	found := map[netip.Prefix]int{}
	for i, r := range out.rules {
		m := verifyRes().reject.FindStringSubmatch(r)
		if m == nil || !strings.Contains(m[2], "/") {
			continue
		}
		p, err := netip.ParsePrefix(m[2])
		if err != nil || (m[1] == "ip") != p.Addr().Is4() {
			continue
		}
		found[p.Masked()] = i
	}
	last := -1
	for _, s := range specialPrefixes {
		i, ok := found[s]
		if !ok {
			errs = append(errs, fmt.Sprintf("Special-range reject rule for %s missing", s))
			continue
		}
		last = max(last, i)
	}
	return errs, last
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

// checkJumps flags extra chains, jumps and queue verdicts. queued are
// the indices of the output rules verified as interactive mode's queue
// rules (queueChecks), the only queue verdicts allowed.
func checkJumps(t table, errs []string, queued map[int]bool) []string {
	for _, name := range t.order {
		if name != "output" && name != "input" {
			errs = append(errs, fmt.Sprintf("unexpected chain %s", name))
		}
		for i, r := range t.chains[name].rules {
			if strings.Contains(r, "jump ") || strings.Contains(r, "goto ") {
				errs = append(errs, fmt.Sprintf("unexpected jump in chain %s: %s", name, r))
			}
			// A queue verdict hands the packet to a userspace program that
			// may accept it: as good as an accept rule.
			if isQueue(r) && !(name == "output" && queued[i]) {
				errs = append(errs, fmt.Sprintf("unexpected queue verdict in chain %s: %s", name, r))
			}
		}
	}
	return errs
}

func isQueue(r string) bool { return strings.HasPrefix(r, "queue") || strings.Contains(r, " queue") }

// queueVerdicts are the listed forms of QueueStmt: nft lists the native
// queue expression as `queue to 100`, the xtables NFQUEUE target (the
// fallback for kernels without nft_queue) as `queue num 100`. Either
// without bypass or fanout.
var queueVerdicts = []string{QueueStmt, "queue to 100"}

// queueChecks verifies interactive mode's queue rules: exactly
// QueueMatches, each logged QUEUED, counted and queued to NFQueueNum
// without bypass, in order and right before the terminal deny log and
// reject, so after every special-range reject and the deny sets. It
// returns the indices of the rules it accepted.
func queueChecks(out *chain, lastSpecial, denyIdx int, errs []string) ([]string, map[int]bool) {
	queued := map[int]bool{}
	for _, r := range out.rules {
		if !isQueue(r) {
			continue
		}
		verdict := r[strings.LastIndex(" "+r, " queue"):]
		if strings.Contains(verdict, "bypass") || strings.Contains(verdict, "fanout") || strings.Contains(verdict, "flags") {
			errs = append(errs, fmt.Sprintf("queue rule with bypass or fanout (a packet nobody decides must be dropped): %s", r))
		}
	}
	matches := QueueMatches()
	n := len(out.rules)
	first := n - 2 - len(matches)
	if first < 0 {
		return append(errs, "interactive queue rules missing"), queued
	}
	for k, m := range matches {
		i := first + k
		r := out.rules[i]
		ok := false
		for _, v := range queueVerdicts {
			if r == m+" "+logPat(PrefixQueued)+" counter "+v {
				ok = true
			}
		}
		if !ok {
			errs = append(errs, fmt.Sprintf("interactive queue rule for %q missing before the terminal reject", m))
			continue
		}
		if i < lastSpecial || i < denyIdx {
			errs = append(errs, fmt.Sprintf("queue rule precedes a special-range or deny reject: %s", r))
			continue
		}
		queued[i] = true
	}
	if out.rules[n-2] != logPat(PrefixDenied)+" counter" {
		errs = append(errs, "terminal deny log missing after the queue rules")
	}
	return errs, queued
}

// refusedChecks requires RefusedRejects as the first rules of the
// interactive output chain: the resolver refuses a held packet by handing
// it back marked (NF_REPEAT), and the chain runs again from its start, so
// only rejects that come before every accept make sure a refused packet
// is never accepted (docs/shield-hook.md, Verification and states).
func refusedChecks(out *chain, errs []string) []string {
	want := RefusedRejects()
	if len(out.rules) < len(want) || !slices.Equal(out.rules[:len(want)], want) {
		errs = append(errs, "refused-mark rejects missing at the head of the output chain (a refused packet handed back to the ruleset must meet them first)")
	}
	return errs
}

// VerifyHook checks a listing against the enforcing ruleset. It returns the
// error strings (docs/shield-hook.md, Verification and states) for the minimum invariants and, beyond them, structural
// errors: hook/policy of both chains, no accept rule the generator does not
// write, closed DNS (dnsChecks), deny sets before allow sets, every
// special range rejected before the learned-address (dns) sets, the
// terminal reject last, an input chain of exactly loopback/established/
// drop, no jumps or extra chains. An empty result means the ruleset is
// enforcing; a table of the previous generator gets ErrOldShape among its
// errors.
func VerifyHook(listing string, interactive bool) []string {
	if interactive {
		return verifyEnforcing(listing, termQueued)
	}
	return verifyEnforcing(listing, termDeny)
}

// VerifyLearn checks a listing against the learn-mode table: the
// enforcing chain of VerifyHook with the LEARNED log-and-accept as its
// last rule, and no other accept.
func VerifyLearn(listing string) []string { return verifyEnforcing(listing, termLearn) }

// terminal is the last rule of an enforcing chain.
type terminal int

const (
	termDeny terminal = iota
	termQueued
	termLearn
)

func verifyEnforcing(listing string, term terminal) []string {
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
	for _, s := range []string{SetAllowV4, SetAllowV6, SetDNSV4, SetDNSV6, SetDenyV4, SetDenyV6} {
		if !strings.Contains(text, "set "+s+" {") {
			errs = append(errs, s+" set missing")
		}
	}
	switch term {
	case termQueued:
		if !strings.Contains(text, PrefixQueued) {
			errs = append(errs, "queued nflog prefix missing")
		}
	case termLearn:
		if !strings.Contains(text, PrefixLearned) {
			errs = append(errs, "learned nflog prefix missing")
		}
	}
	if term != termLearn && !verifyRes().terminalLog.MatchString(text) {
		errs = append(errs, "terminal deny-all rule missing")
	}

	out := t.chains["output"]
	if out == nil {
		return withAdvice(t, errs)
	}
	errs = dnsChecks(out, errs)
	errs, lastSpecial := specialChecks(out, errs)
	if hookOK, policyOK := out.hasHeader("output", "drop"); !hookOK || !policyOK {
		errs = append(errs, "output chain is not a drop-policy output hook")
	}
	denyIdx, allowIdx := -1, -1
	learned := map[string]int{}
	learnAccept := logPat(PrefixLearned) + " counter accept"
	for i, r := range out.rules {
		if term == termLearn && i == len(out.rules)-1 && r == learnAccept {
			continue // the one accept of learn mode, checked below
		}
		if strings.HasPrefix(r, "ip daddr @deny_v4 ") && denyIdx < 0 {
			denyIdx = i
		}
		if strings.HasPrefix(r, "ip daddr @allow_v4 ") && allowIdx < 0 {
			allowIdx = i
		}
		for _, set := range []string{SetDNSV4, SetDNSV6} {
			if strings.Contains(r, "daddr @"+set+" ") {
				if _, seen := learned[set]; !seen {
					learned[set] = i
				}
			}
		}
		if strings.Contains(r, "accept") && !acceptsBy(r, verifyRes().hookAccept) {
			errs = append(errs, fmt.Sprintf("unexpected accept rule: %s", r))
		}
	}
	if denyIdx < 0 || allowIdx < 0 || denyIdx > allowIdx {
		errs = append(errs, "deny-set rules must precede allow-set rules")
	}
	for _, set := range []string{SetDNSV4, SetDNSV6} {
		i, ok := learned[set]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("%s accept rule missing", set))
		case i < lastSpecial:
			errs = append(errs, fmt.Sprintf("%s accept rule precedes a special-range reject (learned addresses must never open a special range)", set))
		}
	}
	wantLast := RejectStmt
	if term == termLearn {
		wantLast = learnAccept
	}
	if n := len(out.rules); n == 0 || out.rules[n-1] != wantLast {
		errs = append(errs, "terminal reject is not the last output rule")
	}
	var queued map[int]bool
	if term == termQueued {
		errs, queued = queueChecks(out, lastSpecial, denyIdx, errs)
		errs = refusedChecks(out, errs)
	}
	errs = checkInput(t, errs)
	return withAdvice(t, checkJumps(t, errs, queued))
}

// VerifyBypass checks a listing against the bypass ruleset (docs/shield-hook.md, The ruleset, rule by rule): closed
// DNS as in hook mode, no accept rules beyond the head's and, without
// allowAll, every special range rejected.
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
	for _, s := range []string{SetAllowV4, SetAllowV6, SetDNSV4, SetDNSV6} {
		if !strings.Contains(text, "set "+s+" {") {
			errs = append(errs, s+" set missing")
		}
	}
	out := t.chains["output"]
	if out == nil {
		return withAdvice(t, errs)
	}
	errs = dnsChecks(out, errs)
	if !allowAll {
		errs, _ = specialChecks(out, errs)
	}
	if hookOK, policyOK := out.hasHeader("output", "accept"); !hookOK || !policyOK {
		errs = append(errs, "output chain is not an accept-policy output hook")
	}
	for _, r := range out.rules {
		if strings.Contains(r, "accept") && !acceptsBy(r, verifyRes().hookAccept[:headAccept]) {
			errs = append(errs, fmt.Sprintf("unexpected accept rule: %s", r))
		}
	}
	errs = checkInput(t, errs)
	return withAdvice(t, checkJumps(t, errs, nil))
}
