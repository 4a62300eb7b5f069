// Package auditview builds one task's audit timeline from the daemons' audit
// files and the task containers' shield files: selection, time order,
// following, the human table and the summary (docs/audit.md, The audit
// command).
package auditview

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/config"
	"terok.dev/sandbox/runner/internal/shieldlog"
)

// Channels are the daemons whose files config.AuditFile names.
var daemonChannels = [...]string{"proxy", "gate", "ssh"}

// ShieldFile is a container's shield record file inside its shield state
// directory (docs/audit.md, Files).
const ShieldFile = "refused.jsonl"

// Source is one audit file of a timeline.
type Source struct {
	Path string
	// ShieldDir, when set, is the shield state directory Path lies in: the
	// operator's actions of its audit log (audit.jsonl) belong to the
	// timeline too (docs/shield.md, Refused traffic: shield log and shield
	// watch).
	ShieldDir string
	// Whole means every record of the file belongs to the task (the shield
	// file of one of the task's containers); otherwise a record belongs to
	// the task by its task (and project) member.
	Whole bool
}

// DaemonSources are the proxy, gate and SSH agent audit files of cfg.
func DaemonSources(cfg config.Config) []Source {
	var out []Source
	for _, ch := range daemonChannels {
		out = append(out, Source{Path: cfg.AuditFile(ch)})
	}
	return out
}

// ShieldSources are the shield files of the given task directories (every
// record belongs to the task) and, with scanAll, those of every default
// task directory <state_dir>/tasks/* (records selected by their task
// member), without duplicates.
func ShieldSources(cfg config.Config, taskDirs []string, scanAll bool) []Source {
	seen := map[string]bool{}
	var out []Source
	for _, d := range taskDirs {
		sd := config.ShieldStateDir(d)
		p := filepath.Join(sd, ShieldFile)
		if !seen[p] {
			seen[p] = true
			out = append(out, Source{Path: p, ShieldDir: sd, Whole: true})
		}
	}
	if scanAll {
		dirs, _ := filepath.Glob(filepath.Join(cfg.StateDir, "tasks", "*"))
		sort.Strings(dirs)
		for _, d := range dirs {
			p := filepath.Join(config.ShieldStateDir(d), ShieldFile)
			if seen[p] {
				continue
			}
			if _, err := os.Stat(p); err == nil {
				seen[p] = true
				out = append(out, Source{Path: p})
			}
		}
	}
	return out
}

// Filter selects the records of one task.
type Filter struct {
	Task    string
	Project string    // "" matches any project
	Since   time.Time // zero: from the beginning
}

// Match reports whether r, read from s, belongs to the timeline.
func (f Filter) Match(s Source, r audit.Record) bool {
	if !f.Since.IsZero() && r.Time.Before(f.Since) {
		return false
	}
	if s.Whole && r.Task == "" {
		return true
	}
	return r.Task == f.Task && (f.Project == "" || r.Project == f.Project)
}

// Collect reads every source (with its rotated files) and returns the
// task's records in time order.
func Collect(srcs []Source, f Filter, warn func(string)) ([]audit.Record, error) {
	var all []audit.Record
	for _, s := range srcs {
		var recs []audit.Record
		var err error
		if s.ShieldDir != "" {
			recs, err = shieldlog.Read(s.ShieldDir, shieldlog.Query{}, warn)
		} else {
			recs, err = audit.Merge(warn, s.Path)
		}
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if f.Match(s, r) {
				all = append(all, r)
			}
		}
	}
	sortByTime(all)
	return all, nil
}

func sortByTime(rs []audit.Record) {
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Time.Before(rs[j].Time) })
}

// Follow streams the task's records to emit: first everything already
// written, in time order, then each record as it lands, across rotations,
// until ctx ends (nil) or emit or a reader fails (that error). warn may be
// called from several goroutines at once only through Follow's own lock.
func Follow(ctx context.Context, srcs []Source, f Filter, emit func(audit.Record) error, warn func(string)) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var wmu sync.Mutex
	safeWarn := func(m string) {
		if warn != nil {
			wmu.Lock()
			warn(m)
			wmu.Unlock()
		}
	}
	// One channel for records and caught-up marks, so a source's history
	// always arrives before its mark.
	type item struct {
		r      audit.Record
		caught bool
	}
	items := make(chan item, 256)
	errs := make(chan error, 2*len(srcs))
	send := func(it item) error {
		select {
		case items <- it:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, s := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := audit.FollowWith(ctx, s.Path, audit.FollowOptions{FromStart: true, Warn: safeWarn,
				CaughtUp: func() { _ = send(item{caught: true}) }},
				func(r audit.Record) error {
					if !f.Match(s, r) {
						return nil
					}
					return send(item{r: r})
				})
			if err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
			}
		}()
	}
	// A shield directory's actions: those written so far join the history,
	// later ones stream (shieldlog.Watch; its refused records are the
	// follower's above, so only actions are taken from it). An action
	// written between the read and the watch's start is missed.
	actionSrcs := 0
	for _, s := range srcs {
		if s.ShieldDir == "" {
			continue
		}
		actionSrcs++
		wg.Add(1)
		go func() {
			defer wg.Done()
			isAction := func(r audit.Record) bool { return r.Event == "action" && f.Match(s, r) }
			recs, err := shieldlog.Read(s.ShieldDir, shieldlog.Query{}, safeWarn)
			if err != nil {
				errs <- err
				return
			}
			for _, r := range recs {
				if isAction(r) && send(item{r: r}) != nil {
					return
				}
			}
			if send(item{caught: true}) != nil {
				return
			}
			err = shieldlog.Watch(ctx, s.ShieldDir, 0, func(r audit.Record) error {
				if !isAction(r) {
					return nil
				}
				return send(item{r: r})
			}, func(string) {}) // the refused file's warnings come from its follower
			if err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
			}
		}()
	}
	var history []audit.Record
	pending := len(srcs) + actionSrcs
	if pending == 0 {
		<-ctx.Done()
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return err
		case it := <-items:
			switch {
			case it.caught:
				pending--
				if pending == 0 {
					sortByTime(history)
					for _, r := range history {
						if err := emit(r); err != nil {
							return err
						}
					}
					history = nil
				}
			case pending > 0:
				history = append(history, it.r)
			default:
				if err := emit(it.r); err != nil {
					return err
				}
			}
		}
	}
}

// ParseSince reads --since: an RFC 3339 time, a date (YYYY-MM-DD, UTC) or
// a duration before now ("90m", "2h").
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q is neither an RFC 3339 time (2026-12-02T11:30:00Z), a date (2026-12-02) nor a duration before now (90m)", s)
}
