package shield

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/common/shieldbundle"
	"terok.dev/sandbox/runner/internal/podman"
)

// Leftovers of failed starts (docs/shield.md, "Leftovers of failed starts"). The
// createRuntime hook starts the container's resolver; when the start fails
// after that (the command does not exist, runc fails), poststop never
// runs, and the resolver would live on with CAP_NET_ADMIN over the netns.
// It exits by itself when the container's init exits, so once podman has
// removed the container there is normally nothing left; Cleanup and the
// scan of `shield check` catch what is.

// launchGrace is how old a resolver must be before the check may call it
// leaked: a launch in progress has a resolver whose container is not
// "running" yet (podman says "created", or container.id still names the
// task's previous container) for milliseconds.
const launchGrace = 30 * time.Second

// Cleanup stops the task's resolver (and the dnsmasq of an old bundle)
// when its container is not running, and removes their PID files
// (firewall.Cleaner: the launcher calls it after a failed start and from
// `stop`). It never touches a process that fails the identity check, nor
// the helpers of a container that runs. Bypass changes nothing: a task
// launched with the shield earlier may have left a resolver.
func (a *Adapter) Cleanup(ctx context.Context, container, taskDir string) error {
	if taskDir == "" {
		return nil
	}
	dir := config.ShieldStateDir(taskDir)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil
	}
	if err := checkStateDir(dir, a.Opts.EUID); err != nil {
		return fmt.Errorf("clean up after %s: %w", container, err)
	}
	s := a.shieldAt(dir)
	ref := container
	if id := readTrim(filepath.Join(dir, shieldbundle.FileContainerID)); id != "" {
		ref = id
	}
	running, err := s.containerRunning(ctx, ref)
	if err != nil {
		return fmt.Errorf("clean up after %s: %w", container, err)
	}
	if running {
		return nil
	}
	var errs []error
	for _, kind := range []daemonKind{kindResolver, kindDnsmasq} {
		pid, err := stopDaemon(ctx, dir, kind)
		if err != nil {
			errs = append(errs, fmt.Errorf("clean up after %s: %w", container, err))
			continue
		}
		if pid > 0 {
			a.Opts.logger().Info("stopped leftover shield helper", "container", container, "helper", kind.name, "pid", pid, "dir", dir)
			s.audit(container, "cleanup", "", fmt.Sprintf("stopped %s pid %d (container not running)", kind.name, pid))
		}
	}
	return errors.Join(errs...)
}

// containerRunning asks podman whether ref (a name or an id) names a
// container whose process runs. A container podman does not know is not
// running; podman failing otherwise is an error (never guess "gone").
func (s *Shield) containerRunning(ctx context.Context, ref string) (bool, error) {
	c, found, err := s.inspectContainer(ctx, ref)
	if err != nil {
		return false, err
	}
	return found && c.Pid > 0, nil
}

func (o Options) now() time.Time {
	if o.Now == nil {
		return time.Now()
	}
	return o.Now()
}

// leak is a live helper process of a task directory.
type leak struct {
	task, dir string
	kind      daemonKind
	pid       int
}

// findHelpers lists the live resolvers and dnsmasqs (identity checked)
// named by the PID files under <stateDir>/tasks/*/shield.
func findHelpers(stateDir string) []leak {
	dirs, _ := filepath.Glob(filepath.Join(stateDir, "tasks", "*", "shield"))
	sort.Strings(dirs)
	var out []leak
	for _, dir := range dirs {
		for _, kind := range []daemonKind{kindResolver, kindDnsmasq} {
			pid, err := shieldbundle.ReadPIDFile(filepath.Join(dir, kind.pidFile))
			if err != nil || pid <= 0 || !processAlive(pid) || !kind.isOurs(pid, dir) {
				continue
			}
			out = append(out, leak{task: filepath.Base(filepath.Dir(dir)), dir: dir, kind: kind, pid: pid})
		}
	}
	return out
}

// containerStates maps the full id of every container podman knows to its
// state (running, created, exited, …).
func (s *Shield) containerStates(ctx context.Context) (map[string]string, error) {
	res, err := s.opts.Tools.Run(ctx, nsenterTimeout, "", s.podmanPath(), "ps", "--all", "--format", "json")
	if err != nil {
		return nil, fmt.Errorf("podman ps: %w", err)
	}
	if res.Code != 0 {
		return nil, fmt.Errorf("podman ps failed (exit %d): %s", res.Code, res.Combined())
	}
	entries, err := podman.ParsePs([]byte(res.Stdout))
	if err != nil {
		return nil, err
	}
	states := map[string]string{}
	for _, e := range entries {
		if e.ID != "" {
			states[e.ID] = e.State
		}
	}
	return states, nil
}

// stateOf is the state of the container whose id starts with short, "" when
// podman has no such container. When several ids start with short (a short
// id is 12 hex digits), the first live one by id wins, else the first by id:
// the answer does not depend on map order, and a helper is never stopped
// while any container it may belong to still runs.
func stateOf(states map[string]string, short string) string {
	if short == "" {
		return ""
	}
	var ids []string
	for id := range states {
		if strings.HasPrefix(id, short) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !leaked(states[id], launchGrace) {
			return states[id]
		}
	}
	return states[ids[0]]
}

// processStarted is when pid started: boot time (btime of /proc/stat)
// plus its start time in clock ticks; false when unknown.
func processStarted(pid int) (time.Time, bool) {
	ticks, err := strconv.ParseInt(procStart(pid), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			// Clock ticks are USER_HZ, 100 on every Linux architecture Go
			// supports.
			return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / 100), true
		}
	}
	return time.Time{}, false
}

// leaked reports whether a helper's container is gone: podman does not
// know it, it has exited, or it is stuck "created" (a failed start). Only a
// helper older than any launch counts: while a launch is in progress the
// hook has started the resolver but container.id may still name the
// task's previous container, which podman no longer knows.
func leaked(state string, age time.Duration) bool {
	if age < launchGrace {
		return false
	}
	switch state {
	case "", "exited", "stopped", "dead", "removing", "created", "configured", "initialized":
		return true
	}
	return false
}

// StopLeaks stops every resolver or dnsmasq of a task directory under the
// configured state directory whose container is gone, and says what it
// stopped; helpers it could not stop, or a podman it could not ask, are
// issues.
func (a *Adapter) StopLeaks(ctx context.Context) (stopped, issues []string) {
	if a.Cfg.StateDir == "" {
		return nil, nil
	}
	helpers := findHelpers(a.Cfg.StateDir)
	if len(helpers) == 0 {
		return nil, nil
	}
	probe := a.Probe()
	states, err := probe.containerStates(ctx)
	if err != nil {
		return nil, []string{fmt.Sprintf("could not list containers to look for leaked resolvers: %v", err)}
	}
	for _, h := range helpers {
		state := stateOf(states, readTrim(filepath.Join(h.dir, shieldbundle.FileContainerID)))
		started, ok := processStarted(h.pid)
		if !ok || !leaked(state, a.Opts.now().Sub(started)) {
			continue
		}
		if checkStateDir(h.dir, a.Opts.EUID) != nil {
			continue // not ours to act on
		}
		pid, err := stopDaemon(ctx, h.dir, h.kind)
		switch {
		case err != nil:
			issues = append(issues, fmt.Sprintf("leaked %s for task %s (pid %d) could not be stopped: %v", h.kind.name, h.task, h.pid, err))
		case pid > 0:
			stopped = append(stopped, fmt.Sprintf("stopped leaked %s for task %s (pid %d)", h.kind.name, h.task, pid))
			a.shieldAt(h.dir).audit(h.task, "cleanup", "", fmt.Sprintf("stopped leaked %s pid %d (found by shield check)", h.kind.name, pid))
		}
	}
	return stopped, issues
}
