package shield

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"terok.dev/sandbox/common/shieldbundle"
)

// resolveWait bounds how long Resolve waits for the resolver's result:
// each lookup is bounded by the resolver's upstream timeouts (2 × 2 s),
// eight run at once.
const resolveWait = 60 * time.Second

// Resolve re-resolves the container's allowlisted names now, through its
// own resolver (docs/shield-resolver.md, "Resolve now"): the resolver looks each name
// up as a container query would be (learned into the dns sets with the
// answer's TTL clamped to the documented bounds, cached), with force
// after dropping its answer cache. Nothing is resolved on the host.
// Audited as action "resolve".
func (s *Shield) Resolve(ctx context.Context, container string, force bool) (shieldbundle.ResolveResult, error) {
	var none shieldbundle.ResolveResult
	dir, err := s.stateDir()
	if err != nil {
		return none, err
	}
	if err := s.requireResolverTier(dir, container, "shield resolve"); err != nil {
		return none, err
	}
	if _, err := s.ContainerPID(ctx, container); err != nil {
		return none, err
	}
	p, present, err := pinDaemon(dir, kindResolver)
	if !present {
		return none, specErrorf("no %s in %s: the container's resolver is not running — %s", shieldbundle.FileResolverPID, dir, dnsBroken)
	}
	if err != nil {
		return none, specErrorf("%v — %s", err, dnsBroken)
	}
	defer p.close()
	// Only a resolver that announced the feature handles the signal; for
	// an older one its default action is to terminate.
	feats, _ := os.ReadFile(s.path(dir, shieldbundle.FileResolverFeatures))
	if !shieldbundle.HasFeature(feats, p.pid, shieldbundle.FeatureResolve) {
		return none, fmt.Errorf("the resolver of %s (pid %d) was started by an older terok-shield-hook and cannot resolve on request; restart the container (terok-sandbox stop, then run) to use shield resolve", container, p.pid)
	}
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return none, err
	}
	req := shieldbundle.ResolveRequest{ID: hex.EncodeToString(idb[:]), Force: force}
	text, err := req.Format()
	if err != nil {
		return none, err
	}
	if err := writeBundleFile(s.path(dir, shieldbundle.FileResolveRequest), []byte(text), 0o600, false); err != nil {
		return none, err
	}
	if err := p.signal(shieldbundle.ResolveSignal); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return none, specErrorf("resolver (pid %d) is dead — %s", p.pid, dnsBroken)
		}
		return none, fmt.Errorf("signal resolver (pid %d): %w", p.pid, err)
	}
	res, err := s.awaitResolve(ctx, dir, p, req.ID)
	if err != nil {
		return none, err
	}
	s.audit(container, "resolve", "", "names="+strconv.Itoa(len(res.Names))+" force="+strconv.FormatBool(force))
	return res, nil
}

// awaitResolve waits for resolve.result with id, or the resolver's end.
func (s *Shield) awaitResolve(ctx context.Context, dir string, p pinned, id string) (shieldbundle.ResolveResult, error) {
	deadline := time.Now().Add(resolveWait)
	path := s.path(dir, shieldbundle.FileResolveResult)
	for {
		if data, err := readBoundedFile(path, shieldbundle.MaxResolveResult); err == nil {
			if res, err := shieldbundle.ParseResolveResult(data); err == nil && res.ID == id {
				return res, nil
			}
		}
		if !processAlive(p.pid) {
			return shieldbundle.ResolveResult{}, specErrorf("resolver (pid %d) exited before answering — %s", p.pid, dnsBroken)
		}
		if time.Now().After(deadline) {
			return shieldbundle.ResolveResult{}, fmt.Errorf("the container's resolver (pid %d) did not answer within %s; see %s", p.pid, resolveWait, s.path(dir, shieldbundle.FileDNSLog))
		}
		select {
		case <-ctx.Done():
			return shieldbundle.ResolveResult{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readBoundedFile reads a regular file of at most max bytes.
func readBoundedFile(path string, max int64) ([]byte, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	return os.ReadFile(path)
}
