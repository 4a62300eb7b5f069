package shield

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// DNS tiers (shield.md §4.1).
const (
	TierDnsmasq = shieldbundle.TierDnsmasq
	TierDig     = shieldbundle.TierDig
	TierGetent  = shieldbundle.TierGetent
)

// resolveTimeout bounds each dig/getent call (shield.md §4.2).
const resolveTimeout = 10 * time.Second

// cacheMaxAge is the freshness of profile.allowed as a cache (§4.4).
const cacheMaxAge = time.Hour

// cacheKeyFile is the sidecar holding the hash of the entry list the cache
// was built from, so a cache built for other profiles is never reused.
const cacheKeyFile = "profile.allowed.key"

// DetectTier picks the DNS tier: dnsmasq when it is installed with nftset
// support, else dig, else getent.
func (t Tools) DetectTier(ctx context.Context) string {
	if p := t.LookPath("dnsmasq"); p != "" {
		if res, err := t.Run(ctx, 10*time.Second, "", p, "--version"); err == nil && res.Code == 0 && hasNftset(res.Stdout+" "+res.Stderr) {
			return TierDnsmasq
		}
	}
	if t.LookPath("dig") != "" {
		return TierDig
	}
	return TierGetent
}

// hasNftset: the version banner lists compile options as words; "nftset"
// must be among them and "no-nftset" must not.
func hasNftset(banner string) bool {
	yes, no := false, false
	for _, w := range strings.Fields(banner) {
		switch w {
		case "nftset":
			yes = true
		case "no-nftset":
			no = true
		}
	}
	return yes && !no
}

// Resolve turns domains into addresses on the host (shield.md §4.2): dig
// first, getent from the first domain dig is missing for. Domains that
// resolve to nothing are logged and skipped; the result is de-duplicated
// in first-seen order and canonical.
func (t Tools) Resolve(ctx context.Context, log *slog.Logger, domains []string) []string {
	useGetent := t.LookPath("dig") == ""
	seen := map[string]bool{}
	var out []string
	for _, d := range domains {
		var ips []string
		if !useGetent {
			var ok bool
			ips, ok = t.digResolve(ctx, d)
			if !ok {
				useGetent = true
			}
		}
		if useGetent {
			ips = t.getentResolve(ctx, d)
		}
		if len(ips) == 0 {
			log.Warn(fmt.Sprintf("Domain '%s' resolved to no IPs (typo or DNS failure?)", d),
				"hint", "check the spelling in the profile and the host's DNS")
			continue
		}
		for _, ip := range ips {
			if !seen[ip] {
				seen[ip] = true
				out = append(out, ip)
			}
		}
	}
	return out
}

// digResolve returns the A and AAAA answers; ok is false when dig is gone.
func (t Tools) digResolve(ctx context.Context, domain string) ([]string, bool) {
	dig := t.LookPath("dig")
	if dig == "" {
		return nil, false
	}
	name := strings.TrimPrefix(domain, "*.")
	res, err := t.Run(ctx, resolveTimeout, "", dig, "+short", name, "A", name, "AAAA")
	if err != nil {
		return nil, true
	}
	return parseAddrLines(res.Stdout, false), true
}

func (t Tools) getentResolve(ctx context.Context, domain string) []string {
	getent := t.LookPath("getent")
	if getent == "" {
		return nil
	}
	res, err := t.Run(ctx, resolveTimeout, "", getent, "hosts", strings.TrimPrefix(domain, "*."))
	if err != nil || res.Code != 0 {
		return nil
	}
	return parseAddrLines(res.Stdout, true)
}

// parseAddrLines keeps lines (or their first column) that are IP addresses;
// CNAME targets and noise are skipped.
func parseAddrLines(out string, firstColumn bool) []string {
	var ips []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if firstColumn {
			if f := strings.Fields(line); len(f) > 0 {
				line = f[0]
			}
		}
		a, err := netip.ParseAddr(line)
		if err != nil || a.Zone() != "" {
			continue
		}
		ips = append(ips, a.Unmap().String())
	}
	return ips
}

// entriesKey identifies an entry list for the cache.
func entriesKey(entries []string) string {
	h := sha256.New()
	for _, e := range entries {
		h.Write([]byte(e))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CachedAllowed implements §4.3/§4.4: the allowlist for entries (raw
// IP/CIDR literals in order, then resolved addresses) written to
// <stateDir>/profile.allowed, reused only when that file is younger than
// maxAge AND was built from exactly these entries.
func (t Tools) CachedAllowed(ctx context.Context, log *slog.Logger, stateDir string, entries []string, maxAge time.Duration, now time.Time) ([]string, error) {
	path := filepath.Join(stateDir, shieldbundle.FileProfileAllowed)
	keyPath := filepath.Join(stateDir, cacheKeyFile)
	key := entriesKey(entries)
	if maxAge > 0 {
		if st, err := os.Stat(path); err == nil && now.Sub(st.ModTime()) < maxAge {
			if k, err := os.ReadFile(keyPath); err == nil && strings.TrimSpace(string(k)) == key {
				if lines, err := readAddrFile(path); err == nil {
					return lines, nil
				}
			}
		}
	}
	addrs, domains := SplitEntries(entries)
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		c, err := CanonicalAddr(s)
		if err != nil {
			log.Warn("skipping invalid allowlist entry", "entry", s, "error", err)
			return
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	for _, a := range addrs {
		add(a)
	}
	for _, a := range t.Resolve(ctx, log, domains) {
		add(a)
	}
	if err := writeBundleFile(path, linesOf(out), 0o600, false); err != nil {
		return nil, err
	}
	if err := writeBundleFile(keyPath, []byte(key+"\n"), 0o600, false); err != nil {
		return nil, err
	}
	return out, nil
}

// readAddrFile reads a line file of addresses, canonical, invalid skipped.
func readAddrFile(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if c, err := CanonicalAddr(l); err == nil {
			out = append(out, c)
		}
	}
	return out, nil
}
