package shield

import (
	"context"
	"fmt"
	"strings"

	"terok.dev/sandbox/common/ruleset"
	"terok.dev/sandbox/common/shieldbundle"
)

// StateQuarantine: the container's table is the quarantine table.
const StateQuarantine = string(ruleset.StateQuarantine)

// Quarantine cuts a running container off (docs/shield.md, Quarantine):
// one nft transaction replaces its table by the quarantine table, which
// refuses every packet leaving the container (DNS, the forwarder and the
// host services included) and those of connections established before.
// The quarantine marker is written first, fsynced, so a restart of the
// container comes up quarantined too (the hook honours the marker), and
// the resolver cannot undo it: it only adds elements to sets no
// quarantine rule uses. resolver.open goes, so a `shield down` before does
// not leave the resolver forwarding every name after `shield up`.
//
// Idempotent: when the marker exists and the live table already is the
// quarantine table, nothing is changed and changed is false. Audited as
// action "quarantine".
func (s *Shield) Quarantine(ctx context.Context, container string) (changed bool, err error) {
	dir, err := s.stateDir()
	if err != nil {
		return false, err
	}
	if err := s.requireResolverTier(dir, container, "shield quarantine"); err != nil {
		return false, err
	}
	pid, err := s.ContainerPID(ctx, container)
	if err != nil {
		return false, err
	}
	marker := s.path(dir, shieldbundle.FileQuarantine)
	live := s.liveTable(ctx, pid)
	if exists(marker) && len(ruleset.VerifyQuarantine(live)) == 0 {
		return false, nil
	}
	if err := writeFile(dir, shieldbundle.FileQuarantine, "quarantine\n"); err != nil {
		return false, fmt.Errorf("persist the quarantine of %s: %w", container, err)
	}
	if err := removeIfExists(s.path(dir, shieldbundle.FileResolverOpen)); err != nil {
		return false, err
	}
	if err := s.nftScript(ctx, pid, ruleset.Replace(live != "", ruleset.Quarantine())); err != nil {
		return false, fmt.Errorf("apply the quarantine table to %s (it is NOT quarantined; the marker stays, so a restart would be): %w", container, err)
	}
	listed, err := s.nft(ctx, pid, "", "list", "table", ruleset.Family, ruleset.Table)
	if err != nil {
		return false, fmt.Errorf("list ruleset of %s: %w", container, err)
	}
	if errs := ruleset.VerifyQuarantine(listed); len(errs) > 0 {
		return false, fmt.Errorf("quarantine of %s: ruleset verification failed: %s", container, strings.Join(errs, "; "))
	}
	s.audit(container, "quarantine", "", "")
	// The resolver re-reads resolver.open (gone) and its allowlist; a
	// resolver that cannot be told changes nothing here: the table refuses
	// its upstream queries.
	if err := s.reloadResolver(dir); err != nil {
		s.warn("quarantined, but the container's resolver could not be told", "container", container, "error", err)
	}
	return true, nil
}

// Quarantined reports whether the container's state directory holds the
// quarantine marker (a restart would come up quarantined).
func (s *Shield) Quarantined() bool {
	dir, err := s.stateDir()
	if err != nil {
		return false
	}
	return exists(s.path(dir, shieldbundle.FileQuarantine))
}

// liftQuarantine removes the marker once `shield up`/`down` put their
// table in place; it reports whether there was one.
func (s *Shield) liftQuarantine(dir string) (bool, error) {
	marker := s.path(dir, shieldbundle.FileQuarantine)
	if !exists(marker) {
		return false, nil
	}
	return true, removeIfExists(marker)
}
