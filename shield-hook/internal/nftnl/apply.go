package nftnl

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"terok.dev/sandbox/shield-hook/internal/nsexec"
)

// ErrTooLarge means the batch does not fit the socket's send buffer, which
// the kernel requires of one netlink message train. The caller applies the
// script with nft instead, which splits its batches differently.
var ErrTooLarge = errors.New("ruleset batch exceeds the netlink send buffer")

// wantSndBuf is the send buffer asked for: ~16k allowlist entries.
const wantSndBuf = 4 << 20

// Conn is a lasting nftables connection and the netlink socket under it,
// on which Apply sends its batch itself (sendBatch).
type Conn struct {
	*nftables.Conn
	raw syscall.RawConn
}

// Open creates a netlink connection in the calling thread's network
// namespace; call it on a thread already switched into the container's
// namespace (nsexec.NS.Do), or use OpenIn. The returned close function must
// be called.
func Open() (*Conn, int, func(), error) {
	sndbuf := 0
	var raw syscall.RawConn
	c, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nc *netlink.Conn) error {
		rc, err := nc.SyscallConn()
		if err != nil {
			return err
		}
		raw = rc
		var serr error
		cerr := rc.Control(func(fd uintptr) {
			// FORCE works for root in the initial user namespace; a
			// rootless hook gets what the sysctl wmem_max allows.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, wantSndBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, wantSndBuf)
			}
			sndbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		})
		if cerr != nil {
			return cerr
		}
		return serr
	}))
	if err != nil {
		return nil, 0, nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	if raw == nil {
		_ = c.CloseLasting()
		return nil, 0, nil, errors.New("nftables netlink socket: no socket under the connection")
	}
	return &Conn{Conn: c, raw: raw}, sndbuf, func() { _ = c.CloseLasting() }, nil
}

// OpenIn is Open for the network namespace ns: the socket is created on a
// thread switched into ns (nsexec.NS.Do) and then returned for use on the
// caller's own goroutine. A netlink socket belongs to the namespace it was
// created in for its whole life, whichever thread later sends on it, and
// the connection is lasting: google/nftables dials it once, in New (that
// is, on the namespace's thread), and reuses it for every operation until
// the close function runs, so no later dial can happen in the caller's
// namespace.
//
// Why not stay on the namespace's thread: mdlayher/socket (v0.5, below
// google/nftables) starts a watcher goroutine for every send and receive
// with a context.Background, and a goroutine locked to its thread that
// waits for that watcher hands its thread off and is woken again through
// futexes - for each of the ~100 acknowledgements of a batch. Measured on
// dev-standard in a new namespace: apply 4.1 -> 1.6 ms, read-back 1.8 ->
// 0.65 ms when the work runs on an ordinary goroutine. (socket v0.7 starts
// no watcher for a context that cannot be cancelled, but needs go 1.26.)
func OpenIn(ns *nsexec.NS) (*Conn, int, func(), error) {
	var (
		c       *Conn
		sndbuf  int
		closeFn func()
	)
	err := ns.Do(func() error {
		var err error
		c, sndbuf, closeFn, err = Open()
		return err
	})
	if err != nil {
		return nil, 0, nil, err
	}
	return c, sndbuf, closeFn, nil
}

// estimate is an upper bound of the batch's size in bytes.
func (p *Plan) estimate() int {
	n := 16 << 10 // table, chains, rules, anonymous sets
	for _, s := range p.sets {
		n += 512 + 64*len(s.elems)
	}
	return n
}

// Apply sends the whole table as one nftables transaction: the table
// (replacing a leftover one), then the sets, chains, rules and elements.
// The kernel commits all of it or none of it.
//
// A plan with interactive mode's queue rules is sent with the native
// queue expression first; a kernel without nft_queue refuses that batch
// (ENOENT: no such expression type; EOPNOTSUPP), nothing of it is
// committed, and the same batch goes again with the xtables NFQUEUE
// target (docs/shield-hook.md, The ruleset, rule by rule). Either way
// the queue has no bypass. Queue tells which form is in force.
//
// A refused batch costs an RCU grace period in the kernel's abort path
// (14 ms more per start measured at load 7-8, BenchmarkApplyVerifyMode),
// so when the kernel publishes its configuration (/proc/config.gz) and
// that says CONFIG_NFT_QUEUE is not set, the xtables form goes first
// (QueueFormFromConfig); should the kernel refuse the form tried first,
// the other one is tried once.
func (p *Plan) Apply(c *Conn, sndbuf int) error {
	p.queue = QueueNative
	if p.queued {
		cfg := p.kernelConfig
		if cfg == "" {
			cfg = kernelConfig
		}
		p.queue = kernelQueueForm(cfg)
	}
	err := p.apply(c, sndbuf)
	if p.queued && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)) {
		first := p.queue
		p.queue = QueueCompat
		if first == QueueCompat {
			p.queue = QueueNative
		}
		if cerr := p.apply(c, sndbuf); cerr != nil {
			return fmt.Errorf("%w (the %s form was refused first: %v)", cerr, first, err)
		}
		return nil
	}
	return err
}

// kernelConfig is where the running kernel publishes its configuration
// (CONFIG_IKCONFIG_PROC); Debian's kernels do not, this machine's does.
const kernelConfig = "/proc/config.gz"

// kernelQueueForm is QueueFormFromConfig of the gzipped configuration at
// path; QueueNative when there is none or it cannot be read.
func kernelQueueForm(path string) QueueForm {
	f, err := os.Open(path)
	if err != nil {
		return QueueNative
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return QueueNative
	}
	defer z.Close()
	return QueueFormFromConfig(z)
}

// QueueFormFromConfig reads a kernel configuration (the text of
// /proc/config.gz) up to its CONFIG_NFT_QUEUE line: QueueCompat when it
// says the option is not set, QueueNative when it is set (built in, or a
// module the kernel loads on first use) or the line is missing.
func QueueFormFromConfig(r io.Reader) QueueForm {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		switch l := sc.Text(); {
		case l == "# CONFIG_NFT_QUEUE is not set":
			return QueueCompat
		case strings.HasPrefix(l, "CONFIG_NFT_QUEUE="):
			return QueueNative
		}
	}
	return QueueNative
}

func (p *Plan) apply(c *Conn, sndbuf int) error {
	if sndbuf > 0 && p.estimate() > sndbuf-32 {
		return ErrTooLarge
	}
	// A leftover table is replaced, never merged into. When the namespace
	// has none (every fresh container), the table is created with
	// NLM_F_EXCL instead of the create+delete pair: should one appear in
	// between, the batch fails rather than merging. Skipping the deletion
	// matters for speed: a deleted table leaves the kernel's destroy work
	// pending, and closing the socket then waits for an RCU grace period
	// (~5 ms measured).
	_, lerr := c.ListTableOfFamily(p.table.Name, p.table.Family)
	// The batch is built on a recorder (google/nftables marshals it) and
	// sent by sendBatch on c's socket.
	rec, batch := recorder()
	if errors.Is(lerr, unix.ENOENT) {
		rec.CreateTable(p.table)
	} else {
		rec.AddTable(p.table)
		rec.DelTable(p.table)
		rec.AddTable(p.table)
	}
	for _, s := range p.sets {
		if err := rec.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.set.Name, err)
		}
	}
	rec.AddChain(p.output.chain)
	rec.AddChain(p.input.chain)
	for _, ch := range []*chainPlan{&p.output, &p.input} {
		for i, r := range ch.rules {
			for _, a := range ch.anon[i] {
				a.set.ID = 0 // a fresh batch-local ID for every batch
				if err := rec.AddSet(a.set, a.elems); err != nil {
					return fmt.Errorf("anonymous set: %w", err)
				}
			}
			rec.AddRule(&nftables.Rule{Table: p.table, Chain: ch.chain, Exprs: flatten(r, p.queue)})
		}
	}
	for _, s := range p.sets {
		for i := 0; i < len(s.elems); i += elemChunk {
			end := min(i+elemChunk, len(s.elems))
			if err := rec.SetAddElements(s.set, s.elems[i:end]); err != nil {
				return fmt.Errorf("elements of %s: %w", s.set.Name, err)
			}
		}
	}
	msgs, err := batch()
	if err != nil {
		return fmt.Errorf("nftables transaction: %w", err)
	}
	if err := c.sendBatch(msgs); err != nil {
		if errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("%w: %v", ErrTooLarge, err)
		}
		return fmt.Errorf("nftables transaction: %w", err)
	}
	return nil
}

// Verify reads the table back and compares it with the plan: exactly the
// two base chains with their type, hook, priority and policy, exactly the
// named sets with their key type, flags and timeout, and in each chain
// exactly the planned rules, expression by expression. Counter values and
// the kernel's names for anonymous sets are not compared. Elements are not
// read back: they were committed by the transaction that succeeded, and
// listing a large allowlist would double the hook's time. It returns one
// message per difference.
func (p *Plan) Verify(c *Conn) ([]string, error) {
	var errs []string
	chains, err := c.ListChainsOfTableFamily(p.table.Family)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	got := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name != p.table.Name {
			continue
		}
		if ch.Name != p.output.chain.Name && ch.Name != p.input.chain.Name {
			errs = append(errs, "unexpected chain "+ch.Name)
		}
		got[ch.Name] = ch
	}
	for _, want := range []*chainPlan{&p.output, &p.input} {
		ch := got[want.chain.Name]
		if ch == nil {
			errs = append(errs, want.chain.Name+" chain missing")
			continue
		}
		if e := chainDiff(want.chain, ch); e != "" {
			errs = append(errs, e)
			continue
		}
		rules, err := c.GetRules(p.table, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		if len(rules) != len(want.rules) {
			errs = append(errs, fmt.Sprintf("%s chain has %d rules, want %d", ch.Name, len(rules), len(want.rules)))
			continue
		}
		for i, r := range rules {
			if d := exprDiff(flatten(want.rules[i], p.queue), r.Exprs); d != "" {
				errs = append(errs, fmt.Sprintf("%s rule %d differs: %s", ch.Name, i+1, d))
			}
		}
	}
	sets, err := c.GetSets(p.table)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	named := map[string]*nftables.Set{}
	for _, s := range sets {
		if s.Anonymous || strings.HasPrefix(s.Name, "__set") {
			continue
		}
		named[s.Name] = s
	}
	if len(named) != len(p.sets) {
		errs = append(errs, fmt.Sprintf("table has %d named sets, want %d", len(named), len(p.sets)))
	}
	for _, want := range p.sets {
		s := named[want.set.Name]
		switch {
		case s == nil:
			errs = append(errs, want.set.Name+" set missing")
		case s.KeyType.Name != want.set.KeyType.Name || s.Interval != want.set.Interval ||
			s.HasTimeout != want.set.HasTimeout || s.Timeout != want.set.Timeout || s.Constant || s.IsMap:
			errs = append(errs, fmt.Sprintf("set %s has type %s interval=%v timeout=%v/%s", s.Name, s.KeyType.Name, s.Interval, s.HasTimeout, s.Timeout))
		}
	}
	return errs, nil
}

func chainDiff(want, got *nftables.Chain) string {
	if got.Type != want.Type || got.Hooknum == nil || *got.Hooknum != *want.Hooknum ||
		got.Priority == nil || *got.Priority != *want.Priority ||
		got.Policy == nil || *got.Policy != *want.Policy {
		return fmt.Sprintf("%s chain is not a %s-policy %s hook", want.Name, policyName(*want.Policy), want.Name)
	}
	return ""
}

func policyName(p nftables.ChainPolicy) string {
	if p == nftables.ChainPolicyAccept {
		return "accept"
	}
	return "drop"
}

// exprDiff compares expressions as the kernel returns them with the ones
// sent, after clearing what the kernel fills in (counter values) or names
// itself (anonymous set names and IDs).
func exprDiff(want, got []expr.Any) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d expressions, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := normExpr(want[i]), normExpr(got[i])
		if !reflect.DeepEqual(w, g) {
			return fmt.Sprintf("expression %d is %#v, want %#v", i+1, g, w)
		}
	}
	return ""
}

func normExpr(e expr.Any) any {
	switch v := e.(type) {
	case *expr.Counter:
		return expr.Counter{}
	case *expr.Lookup:
		c := *v
		if strings.HasPrefix(c.SetName, "__set") {
			c.SetName = "__set"
		}
		c.SetID = 0
		return c
	case *expr.Immediate:
		return *v
	}
	return e
}
