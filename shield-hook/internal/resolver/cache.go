package resolver

import (
	"sync"
	"time"

	"github.com/miekg/dns"
)

// maxCached bounds the answer cache (entries are one question's answer).
const maxCached = 4096

// Answers live in the cache for their smallest TTL, at most
// ruleset.LearnedMaxTTLSeconds: every address of a cached answer was
// learned with a timeout of at least that long (clampTTL never shortens a
// TTL below the bound), and every CNAME target admitted as long, so a hit
// needs neither the upstream nor a kernel update. A reload empties the
// cache, since a changed allowlist or a replaced table may no longer hold
// what the cached answers were learned into.
const maxCacheTTL = 86400

type cacheKey struct {
	name   string
	qtype  uint16
	do, cd bool
}

type cacheEntry struct {
	stored  time.Time
	expires time.Time
	rcode   int
	ra, ad  bool
	answer  []dns.RR
	ns      []dns.RR
}

// answerCache holds forwarded answers (NOERROR with records) by question.
type answerCache struct {
	mu      sync.Mutex
	entries map[cacheKey]*cacheEntry
}

func newAnswerCache() *answerCache { return &answerCache{entries: map[cacheKey]*cacheEntry{}} }

func keyOf(q *query) cacheKey {
	k := cacheKey{name: q.name, qtype: q.qtype, cd: q.req.CheckingDisabled}
	if opt := q.req.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

// put stores the reply m built for q, unless it has no answer records or
// a zero TTL.
func (c *answerCache) put(q *query, m *dns.Msg, now time.Time) {
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 || m.Truncated {
		return
	}
	ttl := uint32(maxCacheTTL)
	for _, rr := range m.Answer {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if ttl == 0 {
		return
	}
	e := &cacheEntry{stored: now, expires: now.Add(time.Duration(ttl) * time.Second), rcode: m.Rcode,
		ra: m.RecursionAvailable, ad: m.AuthenticatedData, answer: m.Answer, ns: m.Ns}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxCached {
		for k, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries { // still full: drop any one
			if len(c.entries) < maxCached {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[keyOf(q)] = e
}

// get returns the cached answer for q with its TTLs aged, or nil.
func (c *answerCache) get(q *query, now time.Time) *dns.Msg {
	k := keyOf(q)
	c.mu.Lock()
	e := c.entries[k]
	if e != nil && !now.Before(e.expires) {
		delete(c.entries, k)
		e = nil
	}
	c.mu.Unlock()
	if e == nil {
		return nil
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	m := new(dns.Msg)
	m.SetReply(q.req)
	m.Compress = true
	m.Rcode, m.RecursionAvailable, m.AuthenticatedData = e.rcode, e.ra, e.ad
	m.Answer = aged(e.answer, age)
	m.Ns = aged(e.ns, age)
	return m
}

func aged(rrs []dns.RR, age uint32) []dns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		if h := c.Header(); h.Ttl > age {
			h.Ttl -= age
		} else {
			h.Ttl = 0
		}
		out[i] = c
	}
	return out
}

func (c *answerCache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[cacheKey]*cacheEntry{}
}
