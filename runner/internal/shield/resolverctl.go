package shield

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"terok.dev/sandbox/common/shieldbundle"
)

// ReconfigureDnsmasq regenerates dnsmasq.conf and restarts the container's
// dnsmasq (shield.md §10): dnsmasq does not re-read its configuration on
// SIGHUP, so new nftset= lines only take effect in a new process.
func (s *Shield) ReconfigureDnsmasq(ctx context.Context, dir string, containerPID int) error {
	upstream := readTrim(s.path(dir, shieldbundle.FileUpstreamDNS))
	if upstream == "" {
		return specErrorf("Cannot reload dnsmasq: upstream DNS not persisted in state")
	}
	domains, err := shieldbundle.EffectiveDomains(dir, func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("read domain lists: %w", err)
	}
	conf, err := shieldbundle.DnsmasqConf(upstream, dir, domains, os.Getpid(), func(m string) { s.warn(m) })
	if err != nil {
		return fmt.Errorf("render dnsmasq.conf: %w", err)
	}
	if err := writeFile(dir, shieldbundle.FileDnsmasqConf, string(conf)); err != nil {
		return err
	}
	pidFile := s.path(dir, shieldbundle.FileDnsmasqPID)
	if !exists(pidFile) {
		return nil
	}
	pid, err := shieldbundle.ReadPIDFile(pidFile)
	if err != nil || pid <= 0 {
		_ = os.Remove(pidFile)
		return specErrorf("unreadable %s — container DNS is broken. Restart the container to recover.", pidFile)
	}
	if !processAlive(pid) {
		return specErrorf("dnsmasq (pid %d) is dead — container DNS is broken. Restart the container to recover.", pid)
	}
	if !shieldbundle.IsOurDnsmasq(pid, dir) {
		_ = os.Remove(pidFile)
		return specErrorf("PID %d is not dnsmasq (stale PID file) — container DNS is broken. Restart the container to recover.", pid)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(ctx, pid, 5*time.Second) {
		return specErrorf("dnsmasq (pid %d) did not exit after SIGTERM; container DNS still uses the old allowlist. Restart the container to recover.", pid)
	}
	_ = os.Remove(pidFile)
	dnsmasq := s.opts.Tools.LookPath("dnsmasq", "/usr/sbin/dnsmasq")
	if dnsmasq == "" {
		return specErrorf("dnsmasq not found: container DNS is broken. Install dnsmasq and restart the container.")
	}
	argv := append([]string{dnsmasq}, shieldbundle.DnsmasqArgs(dir)...)
	if _, err := s.inNetns(ctx, containerPID, "", argv...); err != nil {
		return specErrorf("restart dnsmasq: %w — container DNS is broken. Restart the container to recover.", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if p, err := shieldbundle.ReadPIDFile(pidFile); err == nil && p > 0 && p != pid {
			return nil
		}
		if time.Now().After(deadline) {
			return specErrorf("dnsmasq did not write %s after restart — container DNS is broken. Restart the container to recover.", pidFile)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// processAlive: the process exists and is not a zombie.
func processAlive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
