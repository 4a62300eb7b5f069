package shield

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/runner/internal/profile"
)

// nftFallbacks are tried when nft is not on the path (docs/shield-hook.md, Entering the network namespace).
var nftFallbacks = []string{"/usr/sbin/nft", "/sbin/nft"}

// errNotRunning: the container has no process (exited, or removed).
var errNotRunning = errors.New("container is not running")

// ContainerNotRunningError: a live operation (up, down, allow, deny) asked
// for a container that has no process (exited, or removed). It matches
// errNotRunning with errors.Is.
type ContainerNotRunningError struct{ Container string }

func (e *ContainerNotRunningError) Error() string {
	return fmt.Sprintf("container %s: %v", e.Container, errNotRunning)
}

// Is makes the typed error and the sentinel the same condition.
func (e *ContainerNotRunningError) Is(target error) bool { return target == errNotRunning }

// nsenterTimeout bounds every command run in a container netns (docs/shield-hook.md, Entering the network namespace).
const nsenterTimeout = 30 * time.Second

func (s *Shield) nftPath() (string, error) {
	if p := s.opts.Tools.LookPath("nft", nftFallbacks...); p != "" {
		return p, nil
	}
	return "", errors.New("nft not found: install nftables (e.g. apt-get install nftables) to use the shield")
}

// ContainerPID returns the PID of a running container.
func (s *Shield) ContainerPID(ctx context.Context, container string) (int, error) {
	c, found, err := s.inspectContainer(ctx, container)
	if err != nil {
		return 0, err
	}
	if !found || c.Pid <= 0 {
		return 0, &ContainerNotRunningError{Container: container}
	}
	return c.Pid, nil
}

// inNetns runs argv inside the network namespace of pid: directly through
// nsenter as root, through `podman unshare nsenter` otherwise (docs/shield-hook.md, Entering the network namespace).
func (s *Shield) inNetns(ctx context.Context, pid int, stdin string, argv ...string) (Result, error) {
	nsenter := s.opts.Tools.LookPath("nsenter", "/usr/bin/nsenter")
	if nsenter == "" {
		return Result{}, errors.New("nsenter not found: install util-linux")
	}
	cmd := append([]string{nsenter, "-t", strconv.Itoa(pid), "-n", "--"}, argv...)
	if s.opts.EUID != 0 {
		cmd = append([]string{s.podmanPath(), "unshare"}, cmd...)
	}
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, stdin, cmd...)
	shown := strings.Join(argv, " ")
	if errors.Is(err, errTimeout) {
		return res, fmt.Errorf("nsenter command timed out after 30 s: cmd=%s", shown)
	}
	if err != nil {
		return res, err
	}
	if res.Code != 0 {
		out := res.Combined()
		if out == "" {
			return res, fmt.Errorf("nsenter command failed (exit %d) cmd=%s (no output)", res.Code, shown)
		}
		return res, fmt.Errorf("nsenter command failed (exit %d) cmd=%s:\n%s", res.Code, shown, out)
	}
	return res, nil
}

// nft runs nft with args (and an optional script on stdin) in the netns.
func (s *Shield) nft(ctx context.Context, pid int, script string, args ...string) (string, error) {
	nft, err := s.nftPath()
	if err != nil {
		return "", err
	}
	res, err := s.inNetns(ctx, pid, script, append([]string{nft}, args...)...)
	return res.Stdout, err
}

func (s *Shield) nftScript(ctx context.Context, pid int, script string) error {
	_, err := s.nft(ctx, pid, script, "-f", "-")
	return err
}

// liveTable returns `nft list table inet terok_shield`, "" on any failure.
func (s *Shield) liveTable(ctx context.Context, pid int) string {
	out, err := s.nft(ctx, pid, "", "list", "table", "inet", "terok_shield")
	if err != nil {
		return ""
	}
	return out
}
func setFor(kind, addr string) string {
	if ruleset.IsIPv6(addr) {
		return kind + "_v6"
	}
	return kind + "_v4"
}

// expectedMissing is nft's complaint when deleting an absent element.
func expectedMissing(err error) bool {
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "no such file") || strings.Contains(m, "element does not exist") || strings.Contains(m, "not in set")
}

// addElement puts addr into the live kind set (allow or deny) so that it
// takes effect at once, coping with nft's interval sets, which refuse
// overlapping elements: an address already inside a live element is left
// alone (it is covered), and elements inside a new range are replaced by
// it in the same transaction.
func (s *Shield) addElement(ctx context.Context, pid int, kind, addr string) error {
	set := setFor(kind, addr)
	out, err := s.nft(ctx, pid, "", "list", "set", "inet", "terok_shield", set)
	if err != nil {
		return fmt.Errorf("read live set %s: %w", set, err)
	}
	elems := parseSetElements(out)
	if c := coveredBy(addr, elems); c != "" {
		return nil
	}
	var del []string
	for _, e := range elems {
		if coveredBy(e, []string{addr}) != "" {
			del = append(del, e)
		}
	}
	script := ""
	if len(del) > 0 {
		script = ruleset.DeleteElements(kind, del)
	}
	add, _ := ruleset.Elements("add", kind, []string{addr}, false)
	script += add
	return s.nftScript(ctx, pid, script)
}

// deleteLearned removes from the live dns set of addr's family every
// element addr covers (the address itself, or the learned addresses inside
// a range).
func (s *Shield) deleteLearned(ctx context.Context, pid int, addr string) error {
	set := setFor(ruleset.KindDNS, addr)
	out, err := s.nft(ctx, pid, "", "list", "set", "inet", "terok_shield", set)
	if err != nil {
		return fmt.Errorf("read live set %s: %w", set, err)
	}
	var del []string
	for _, e := range parseSetElements(out) {
		if coveredBy(e, []string{addr}) != "" {
			del = append(del, e)
		}
	}
	if len(del) == 0 {
		return nil
	}
	return s.nftScript(ctx, pid, ruleset.DeleteElements(ruleset.KindDNS, del))
}

// parseSetElements extracts the addresses and prefixes of `nft list set`
// output (the "elements = { ... }" block; per-element options such as
// timeouts are dropped).
func parseSetElements(text string) []string {
	i := strings.Index(text, "elements = {")
	if i < 0 {
		return nil
	}
	body := text[i+len("elements = {"):]
	if j := strings.IndexByte(body, '}'); j >= 0 {
		body = body[:j]
	}
	var out []string
	for _, item := range strings.Split(body, ",") {
		f := strings.Fields(item)
		if len(f) == 0 {
			continue
		}
		if c, err := ruleset.CanonicalIP(f[0]); err == nil {
			out = append(out, c)
		} else if lo, hi, ok := strings.Cut(f[0], "-"); ok && profile.IsAddrEntry(lo) && profile.IsAddrEntry(hi) {
			out = append(out, f[0])
		}
	}
	return out
}

// coveredBy returns the first entry of list (address, prefix or "a-b"
// range) that contains addr entirely, or "".
func coveredBy(addr string, list []string) string {
	lo, hi, ok := addrBounds(addr)
	if !ok {
		return ""
	}
	for _, e := range list {
		elo, ehi, ok := addrBounds(e)
		if ok && elo.Is4() == lo.Is4() && elo.Compare(lo) <= 0 && hi.Compare(ehi) <= 0 {
			return e
		}
	}
	return ""
}

// addrBounds gives the first and last address of an address, prefix or range.
func addrBounds(s string) (lo, hi netip.Addr, ok bool) {
	if a, b, isRange := strings.Cut(s, "-"); isRange {
		la, err1 := netip.ParseAddr(a)
		hb, err2 := netip.ParseAddr(b)
		if err1 != nil || err2 != nil {
			return lo, hi, false
		}
		return la.Unmap(), hb.Unmap(), true
	}
	c, err := ruleset.CanonicalIP(s)
	if err != nil {
		return lo, hi, false
	}
	if !strings.Contains(c, "/") {
		a := netip.MustParseAddr(c)
		return a, a, true
	}
	p := netip.MustParsePrefix(c)
	lo = p.Addr()
	b := lo.AsSlice()
	bits := p.Bits()
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			if i*8+bit >= bits {
				b[i] |= 0x80 >> bit
			}
		}
	}
	hi, _ = netip.AddrFromSlice(b)
	return lo, hi, true
}
