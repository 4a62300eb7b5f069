package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/miekg/dns"

	"terok.dev/sandbox/common/shieldbundle"
)

// resolveParallel bounds the lookups of one `shield resolve` in flight:
// an unreachable upstream costs upstreamTimeout × upstreamTries per
// lookup, and a profile lists a few dozen names.
const resolveParallel = 8

// resolveNow answers a `shield resolve` request (docs/shield-resolver.md,
// Resolve now): every name of the allowlist (a "*." entry by its base
// name) is looked up, A and AAAA, through decide and forward, exactly as a
// container's query would be, so the answers are learned with their TTLs
// clamped and cached; with Force the cache is emptied first. The result
// goes to resolve.result, replaced atomically, carrying the request's id.
func (r *Resolver) resolveNow(ctx context.Context) error {
	data, err := readSmall(filepath.Join(r.dir, shieldbundle.FileResolveRequest), 256)
	if err != nil {
		return fmt.Errorf("read %s: %w", shieldbundle.FileResolveRequest, err)
	}
	req, err := shieldbundle.ParseResolveRequest(data)
	if err != nil {
		return err
	}
	if req.Force {
		r.cache.flush()
	}
	r.mu.Lock()
	names := make([]string, 0, len(r.pol.domains))
	for n := range r.pol.domains {
		names = append(names, n)
	}
	r.mu.Unlock()
	sort.Strings(names)
	res := shieldbundle.ResolveResult{ID: req.ID, Force: req.Force, Names: make([]shieldbundle.ResolvedName, len(names))}
	var wg sync.WaitGroup
	sem := make(chan struct{}, resolveParallel)
	for i, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res.Names[i] = r.lookupBoth(ctx, n)
		}()
	}
	wg.Wait()
	res.Time = r.now().UTC()
	r.log.log(slog.LevelInfo, "resolved on request", slog.Int("names", len(names)), slog.Bool("force", req.Force))
	return writeResult(r.dir, res)
}

// lookupBoth asks for the A and AAAA records of name.
func (r *Resolver) lookupBoth(ctx context.Context, name string) shieldbundle.ResolvedName {
	out := shieldbundle.ResolvedName{Name: name, Addresses: []string{}, Cached: true}
	seen := map[string]bool{}
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rcode := &out.Rcode
		if t == dns.TypeAAAA {
			rcode = &out.RcodeAAAA
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), t)
		m.RecursionDesired = true
		pkt, err := m.Pack()
		if err != nil {
			*rcode, out.Cached = dns.RcodeToString[dns.RcodeFormatError], false
			continue
		}
		reply, q := r.decide(pkt)
		cached := false
		if reply == nil && q != nil {
			if reply = r.cached(q, maxTCPMessage); reply != nil {
				cached = true
			} else {
				reply = r.forward(ctx, q, maxTCPMessage)
			}
		}
		out.Cached = out.Cached && cached
		ans := new(dns.Msg)
		if reply == nil || ans.Unpack(reply) != nil {
			*rcode = dns.RcodeToString[dns.RcodeServerFailure]
			continue
		}
		*rcode = dns.RcodeToString[ans.Rcode]
		for _, rr := range ans.Answer {
			var a netip.Addr
			switch v := rr.(type) {
			case *dns.A:
				a, _ = netip.AddrFromSlice(v.A.To4())
			case *dns.AAAA:
				a, _ = netip.AddrFromSlice(v.AAAA)
			}
			if a.IsValid() && !seen[a.String()] {
				seen[a.String()] = true
				out.Addresses = append(out.Addresses, a.String())
			}
		}
	}
	return out
}

// readSmall reads a regular file of at most max bytes, not following a
// symlink.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// writeResult replaces resolve.result atomically.
func writeResult(dir string, res shieldbundle.ResolveResult) error {
	data, err := res.Marshal()
	if err != nil {
		return err
	}
	return writeAtomic(dir, shieldbundle.FileResolveResult, data)
}

// writeAtomic replaces dir/name (mode 0600) by rename of a temp file.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	if _, err = f.Write(data); err == nil {
		err = f.Close()
	} else {
		_ = f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// resolveWorker runs resolve requests one at a time for run: a signal
// while one runs queues at most one more. stop cancels the lookups and
// waits for the worker.
type resolveWorker struct {
	kick   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// startResolveWorker starts the worker and announces it in
// resolver.features (the runner signals only a resolver that does).
func startResolveWorker(r *Resolver) *resolveWorker {
	if err := writeAtomic(r.dir, shieldbundle.FileResolverFeatures, []byte(shieldbundle.FormatFeatures(os.Getpid(), shieldbundle.FeatureResolve))); err != nil {
		r.log.log(slog.LevelWarn, "resolve requests unavailable", slog.String("error", err.Error()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &resolveWorker{kick: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.kick:
				if err := r.resolveNow(ctx); err != nil {
					r.log.log(slog.LevelWarn, "resolve request failed", slog.String("error", err.Error()))
				}
			}
		}
	}()
	return w
}

func (w *resolveWorker) request() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *resolveWorker) stop() {
	w.cancel()
	<-w.done
}
