// Package shieldlog is one container's shield timeline: the refused-traffic
// records its resolver writes (refused.jsonl, with its rotated files) and
// the operator's actions of the shield's audit log (audit.jsonl), merged by
// time, after the fact (Read) or as they land (Watch); and the human table
// of `terok-sandbox shield log` / `shield watch` (docs/shield.md, Refused
// traffic: shield log and shield watch).
package shieldlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"terok.dev/sandbox/common/audit"
	"terok.dev/sandbox/common/shieldbundle"
)

// RefusedFile is the resolver's record file in the shield state directory
// (docs/shield-resolver.md, Refused traffic).
const RefusedFile = "refused.jsonl"

// maxActionLine bounds one line of audit.jsonl a reader holds.
const maxActionLine = 64 << 10

// Action turns one event of the shield's audit log into a record of the
// timeline: channel shield, event action, outcome ok, members action, dest,
// detail (docs/audit.md, Channel shield). ok is false for an event without
// a parseable time or action.
func Action(ev shieldbundle.Event) (audit.Record, bool) {
	t, err := time.Parse(time.RFC3339Nano, ev.TS)
	if err != nil || ev.Action == "" {
		return audit.Record{}, false
	}
	r := audit.Record{V: audit.Version, Time: t.UTC(), Channel: "shield", Event: "action", Outcome: "ok",
		Container: ev.Container, Fields: map[string]any{"action": ev.Action}}
	if ev.Dest != "" {
		r.Fields["dest"] = ev.Dest
	}
	if ev.Detail != "" {
		r.Fields["detail"] = ev.Detail
	}
	return r, true
}

// parseAction reads one line of audit.jsonl.
func parseAction(line []byte) (audit.Record, error) {
	var ev shieldbundle.Event
	if err := json.Unmarshal(line, &ev); err != nil {
		return audit.Record{}, fmt.Errorf("shield audit event: %w", err)
	}
	r, ok := Action(ev)
	if !ok {
		return audit.Record{}, errors.New("shield audit event: missing ts or action")
	}
	return r, nil
}

// readActions reads every event of audit.jsonl; corrupt lines are warned
// about with file:line and skipped.
func readActions(path string, warn func(string)) ([]audit.Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var out []audit.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxActionLine)
	for ln := 1; sc.Scan(); ln++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		r, err := parseAction(sc.Bytes())
		if err != nil {
			if warn != nil {
				warn(fmt.Sprintf("%s:%d: %v", path, ln, err))
			}
			continue
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// Query selects records of Read.
type Query struct {
	Since time.Time // zero: all
	Last  int       // > 0: only the last N
}

// Read returns the container's refused, dns-refused and action records of
// state directory dir, merged by time (equal times: refused file first).
func Read(dir string, q Query, warn func(string)) ([]audit.Record, error) {
	recs, err := audit.Merge(warn, filepath.Join(dir, RefusedFile))
	if err != nil {
		return nil, err
	}
	acts, err := readActions(filepath.Join(dir, shieldbundle.FileAudit), warn)
	if err != nil {
		return nil, err
	}
	all := append(recs, acts...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time.Before(all[j].Time) })
	if !q.Since.IsZero() {
		i := sort.Search(len(all), func(i int) bool { return !all[i].Time.Before(q.Since) })
		all = all[i:]
	}
	if q.Last > 0 && len(all) > q.Last {
		all = all[len(all)-q.Last:]
	}
	return all, nil
}

// Watch streams the records written to dir's refused file (across its
// rotations, audit.Follow) and audit log after the call, in the order they
// are seen, until ctx ends (nil) or emit fails (that error). Poll is the
// audit log's look interval (0: audit.DefaultPoll).
func Watch(ctx context.Context, dir string, poll time.Duration, emit func(audit.Record) error, warn func(string)) error {
	if poll <= 0 {
		poll = audit.DefaultPoll
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make(chan audit.Record, 64)
	errc := make(chan error, 2)
	send := func(r audit.Record) error {
		select {
		case recs <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	warnc := make(chan string, 16)
	sendWarn := func(m string) {
		select {
		case warnc <- m:
		case <-ctx.Done():
		}
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		err := audit.FollowWith(ctx, filepath.Join(dir, RefusedFile), audit.FollowOptions{Poll: poll, Warn: sendWarn}, send)
		if err != nil && !errors.Is(err, context.Canceled) {
			errc <- err
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		err := followActions(ctx, filepath.Join(dir, shieldbundle.FileAudit), poll, send, sendWarn)
		if err != nil && !errors.Is(err, context.Canceled) {
			errc <- err
		}
	}()
	defer func() { cancel(); <-done; <-done }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case m := <-warnc:
			if warn != nil {
				warn(m)
			}
		case r := <-recs:
			if err := emit(r); err != nil {
				return err
			}
		}
	}
}

// followActions streams the events appended to audit.jsonl after the call
// (the file is append-only and never rotated; shorter than what was read
// means it was replaced: read again from its start, with a warning).
func followActions(ctx context.Context, path string, poll time.Duration, fn func(audit.Record) error, warn func(string)) error {
	var off int64
	if st, err := os.Stat(path); err == nil {
		off = st.Size()
	}
	var partial []byte
	line := 0
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		st, err := os.Stat(path)
		if err != nil {
			continue // not there (yet): waited for
		}
		if st.Size() < off {
			warn(fmt.Sprintf("%s: truncated or replaced; reading it again from its start", path))
			off, partial, line = 0, nil, 0
		}
		if st.Size() == off {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			continue
		}
		b, err := io.ReadAll(io.LimitReader(f, 4<<20))
		f.Close()
		if err != nil {
			continue
		}
		off += int64(len(b))
		partial = append(partial, b...)
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				break
			}
			l := partial[:i]
			partial = partial[i+1:]
			line++
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			r, err := parseAction(l)
			if err != nil {
				warn(fmt.Sprintf("%s: line %d after the start of the watch: %v", path, line, err))
				continue
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(partial) > maxActionLine {
			warn(fmt.Sprintf("%s: a line over %d bytes skipped", path, maxActionLine))
			partial = nil
		}
		partial = append([]byte(nil), partial...)
	}
}

// Header is the first line of the human table.
func Header() string { return row("TIME", "EVENT", "WHAT", "REASON", "COUNT") }

// Row is one record as a line of the human table: time (UTC, ms), event,
// what (refused: protocol, destination[:port], ICMP type, name;
// dns-refused: type and name; seen, dns-forwarded: type, name, rcode and
// addresses; action: action, dest, detail), reason
// (outcome for an action) and count (with dropped).
func Row(r audit.Record) string {
	s := func(k string) string {
		v, ok := r.Fields[k]
		if !ok || v == nil {
			return ""
		}
		return fmt.Sprint(v)
	}
	var what []string
	count := s("count")
	switch r.Event {
	case "refused", "decision", "learned":
		if v := s("verdict"); v != "" {
			what = append(what, v)
		}
		dst := s("dst")
		if p := s("dport"); p != "" {
			if strings.Contains(dst, ":") {
				dst = "[" + dst + "]"
			}
			dst += ":" + p
		}
		what = append(what, s("proto"), dst)
		if t := s("icmp_type"); t != "" {
			what = append(what, "type "+t)
		}
		if n := s("name"); n != "" {
			what = append(what, "("+n+")")
		}
		if dst == "" && s("proto") == "" {
			what = []string{"(attempts not described)"}
		}
	case "dns-refused":
		what = append(what, s("qtype"), s("name"))
	case "seen", "dns-forwarded":
		what = append(what, s("qtype"), s("name"), s("rcode"))
		if as, ok := r.Fields["addrs"].([]any); ok && len(as) > 0 {
			var list []string
			for _, a := range as {
				list = append(list, fmt.Sprint(a))
			}
			what = append(what, "->", strings.Join(list, ","))
		}
	case "action":
		what = append(what, s("action"), s("dest"), s("detail"))
		count = ""
	default:
		what = append(what, r.Channel)
	}
	if d := s("dropped"); d != "" {
		count += " +" + d + " dropped"
	}
	reason := r.Reason
	if reason == "" {
		reason = r.Outcome
	}
	return row(r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), clean(r.Event), clean(strings.Join(nonEmpty(what), " ")), clean(reason), clean(count))
}

func row(t, ev, what, reason, count string) string {
	return strings.TrimRight(fmt.Sprintf("%-24s  %-11s  %-60s  %-15s  %s", t, ev, what, reason, count), " ")
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// clean keeps a container-chosen value (a refused name) from moving the
// terminal: control characters become '?', the column is cut at 120.
func clean(s string) string {
	b := []rune(audit.Printable(s))
	if len(b) > 120 {
		b = append(b[:119], '…')
	}
	return string(b)
}
