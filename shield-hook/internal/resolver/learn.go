package resolver

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/google/nftables"

	"terok.dev/sandbox/common/ruleset"
)

// maxLearned bounds the learned addresses the resolver remembers (to drop
// them again when their name leaves the allowlist). Past it, an address
// still goes into the kernel set, where its timeout ends it, but is not
// remembered.
const maxLearned = 16384

// Kernel updates are skipped for an address added less than refreshAfter
// ago whose new lifetime would end at most refreshSlack later than the one
// it got then: a repeated lookup of the same name then costs no netlink
// round trip.
const (
	refreshAfter = 10 * time.Second
	refreshSlack = 10 * time.Second
	// maxOrigins bounds the listed domains remembered per address.
	maxOrigins = 8
)

// learnItem is one address of a forwarded answer to admit for ttl.
type learnItem struct {
	addr netip.Addr
	ttl  time.Duration
}

type learnedAddr struct {
	added   time.Time // last kernel update
	expires time.Time // end of the lifetime given then
	origins map[string]time.Time
}

// learner adds addresses to the dns_v4/dns_v6 sets of the container's
// table over netlink and remembers who vouched for them.
type learner struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	v4    *nftables.Set
	v6    *nftables.Set
	addrs map[netip.Addr]*learnedAddr
	now   func() time.Time
}

func learnedSet(name string, kt nftables.SetDatatype) *nftables.Set {
	return &nftables.Set{
		Table:      &nftables.Table{Name: ruleset.Table, Family: nftables.TableFamilyINet},
		Name:       name,
		KeyType:    kt,
		HasTimeout: true,
	}
}

// newLearner opens a lasting netlink socket in the calling process's
// network namespace (the resolver runs inside the container's).
func newLearner() (*learner, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("netlink socket for the learned sets: %w", err)
	}
	return &learner{
		conn:  c,
		v4:    learnedSet(ruleset.SetDNSV4, nftables.TypeIPAddr),
		v6:    learnedSet(ruleset.SetDNSV6, nftables.TypeIP6Addr),
		addrs: map[netip.Addr]*learnedAddr{},
		now:   time.Now,
	}, nil
}

func (l *learner) close() { _ = l.conn.CloseLasting() }

func (l *learner) setFor(a netip.Addr) *nftables.Set {
	if a.Is4() {
		return l.v4
	}
	return l.v6
}

func elem(a netip.Addr, ttl time.Duration) nftables.SetElement {
	return nftables.SetElement{Key: a.AsSlice(), Timeout: ttl}
}

// add puts items into the learned sets, each with its own timeout, in one
// netlink transaction, before the answer that carries them is returned.
// Items must already be filtered (no special address reaches this point).
func (l *learner) add(items []learnItem, origin string) error {
	if len(items) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var e4, e6 []nftables.SetElement
	var updated []learnItem
	for _, it := range items {
		if !it.addr.IsValid() || ruleset.IsSpecial(it.addr) {
			return fmt.Errorf("refusing to learn special address %s", it.addr)
		}
		exp := now.Add(it.ttl)
		if rec := l.addrs[it.addr]; rec != nil && now.Sub(rec.added) < refreshAfter && !exp.After(rec.expires.Add(refreshSlack)) {
			l.vouch(rec, origin, exp)
			continue
		}
		if it.addr.Is4() {
			e4 = append(e4, elem(it.addr, it.ttl))
		} else {
			e6 = append(e6, elem(it.addr, it.ttl))
		}
		updated = append(updated, it)
	}
	if len(updated) == 0 {
		return nil
	}
	if len(e4) > 0 {
		if err := l.conn.SetAddElements(l.v4, e4); err != nil {
			return fmt.Errorf("add to %s: %w", ruleset.SetDNSV4, err)
		}
	}
	if len(e6) > 0 {
		if err := l.conn.SetAddElements(l.v6, e6); err != nil {
			return fmt.Errorf("add to %s: %w", ruleset.SetDNSV6, err)
		}
	}
	if err := l.conn.Flush(); err != nil {
		return fmt.Errorf("add learned addresses: %w", err)
	}
	for _, it := range updated {
		exp := now.Add(it.ttl)
		rec := l.addrs[it.addr]
		if rec == nil {
			if len(l.addrs) >= maxLearned {
				l.pruneExpired(now)
			}
			if len(l.addrs) >= maxLearned {
				continue
			}
			rec = &learnedAddr{origins: map[string]time.Time{}}
			l.addrs[it.addr] = rec
		}
		rec.added, rec.expires = now, exp
		l.vouch(rec, origin, exp)
	}
	return nil
}

func (l *learner) vouch(rec *learnedAddr, origin string, exp time.Time) {
	if old, ok := rec.origins[origin]; ok || len(rec.origins) < maxOrigins {
		if exp.After(old) {
			rec.origins[origin] = exp
		}
	}
}

func (l *learner) pruneExpired(now time.Time) {
	for a, rec := range l.addrs {
		if !now.Before(rec.expires) {
			delete(l.addrs, a)
		}
	}
}

// reload applies a changed allowlist: addresses no remaining allowed
// origin vouches for are deleted from the kernel sets; the others are put
// back with what is left of their lifetime, so a table that `shield
// up`/`down` replaced gets them again. It returns the number deleted.
func (l *learner) reload(stillAllowed func(origin string) bool) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.pruneExpired(now)
	var errs []error
	deleted := 0
	var e4, e6 []nftables.SetElement
	var restored []*learnedAddr
	for a, rec := range l.addrs {
		// Until the restore below succeeds, nothing is assumed to be in
		// the kernel.
		rec.added = time.Time{}
		for o, exp := range rec.origins {
			if !stillAllowed(o) || !now.Before(exp) {
				delete(rec.origins, o)
			}
		}
		if len(rec.origins) == 0 {
			delete(l.addrs, a)
			// One element per transaction: an element the kernel already
			// timed out would fail a shared batch.
			if err := l.conn.SetDeleteElements(l.setFor(a), []nftables.SetElement{{Key: a.AsSlice()}}); err == nil {
				if err := l.conn.Flush(); err == nil {
					deleted++
				}
			}
			continue
		}
		left := rec.expires.Sub(now).Truncate(time.Second)
		if left < time.Second {
			continue
		}
		if a.Is4() {
			e4 = append(e4, elem(a, left))
		} else {
			e6 = append(e6, elem(a, left))
		}
		restored = append(restored, rec)
	}
	if len(e4)+len(e6) > 0 {
		if len(e4) > 0 {
			errs = append(errs, l.conn.SetAddElements(l.v4, e4))
		}
		if len(e6) > 0 {
			errs = append(errs, l.conn.SetAddElements(l.v6, e6))
		}
		errs = append(errs, l.conn.Flush())
	}
	if err := errors.Join(errs...); err != nil {
		return deleted, fmt.Errorf("restore learned addresses: %w", err)
	}
	for _, rec := range restored {
		rec.added, rec.expires = now, now.Add(rec.expires.Sub(now).Truncate(time.Second))
	}
	return deleted, nil
}

// forget drops the assumption that the kernel still holds what was added:
// the next answer with one of these addresses sends it again.
func (l *learner) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, rec := range l.addrs {
		rec.added = time.Time{}
	}
}
