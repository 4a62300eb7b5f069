package auditview

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strings"
	"time"

	"terok.dev/sandbox/common/audit"
)

// TimeLayout is the table's time column: UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// whatMembers are, per channel, the members the table's "what" column shows
// after the event, in this order (docs/audit.md, The audit command). A
// record with none of them shows its other members as name=value.
var whatMembers = map[string][]string{
	"proxy": {"method", "upstream_host", "host", "path", "status"},
	"gate":  {"repo", "ref", "refs", "kind"},
	"ssh":   {"key_fingerprint", "key_comment", "dest_host", "dest_fingerprint"},
}

// destMembers name a record's destination for the summary, first present
// wins.
var destMembers = map[string][]string{
	"proxy":  {"upstream_host", "host"},
	"gate":   {"repo", "project"},
	"ssh":    {"dest_host", "dest_fingerprint"},
	"shield": {"name", "dst"},
}

// quiet members never shown in the generic name=value list: long digests
// and addresses that say nothing about what happened.
var quiet = map[string]bool{"data_sha256": true, "remote": true}

// Row is one line of the human timeline.
type Row struct {
	Time, Channel, What, Outcome string
}

// RowOf renders r for the table. Every column is made printable: the
// event, channel, outcome and reason come from files a daemon wrote about
// a hostile task's requests, and none of them may move a terminal's cursor.
func RowOf(r audit.Record) Row {
	out := r.Outcome
	if r.Reason != "" {
		out += " (" + r.Reason + ")"
	}
	return Row{
		Time:    r.Time.UTC().Format(TimeLayout),
		Channel: audit.Printable(r.Channel),
		What:    audit.Printable(What(r)),
		Outcome: audit.Printable(out),
	}
}

// What is the "what" column: the event and the channel's telling members.
func What(r audit.Record) string {
	parts := []string{r.Event}
	if r.Channel == "shield" {
		if w := shieldWhat(r); w != "" {
			return clip(r.Event+" "+w, 100)
		}
	}
	shown := false
	for _, k := range whatMembers[r.Channel] {
		if v, ok := r.Fields[k]; ok {
			if k == "refs" {
				parts = append(parts, refsText(v))
			} else {
				parts = append(parts, scalar(v))
			}
			shown = true
		}
	}
	if !shown {
		keys := make([]string, 0, len(r.Fields))
		for k := range r.Fields {
			if !quiet[k] {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, k+"="+scalar(r.Fields[k]))
		}
	}
	return clip(strings.Join(parts, " "), 100)
}

// scalar prints a member's value: strings bare, numbers without exponent,
// anything else as compact JSON. Control characters never reach a terminal.
func scalar(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			s = fmt.Sprintf("%d", int64(x))
		} else {
			s = fmt.Sprint(x)
		}
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return "?"
		}
		s = string(b)
	}
	return audit.Printable(s)
}

// shieldWhat shows a shield record (docs/audit.md, Channel shield):
// refused packets as "PROTO DST[:DPORT] [NAME] [xCOUNT]", refused names as
// "NAME QTYPE [xCOUNT]", operator actions as "ACTION [DEST] [DETAIL]"; ""
// when it has none of those members.
func shieldWhat(r audit.Record) string {
	str := func(k string) string {
		if v, ok := r.Fields[k]; ok {
			return scalar(v)
		}
		return ""
	}
	var parts []string
	if r.Event == "action" {
		for _, k := range []string{"action", "dest", "detail"} {
			if v := str(k); v != "" {
				parts = append(parts, v)
			}
		}
		return strings.Join(parts, " ")
	}
	if p := str("proto"); p != "" {
		parts = append(parts, p)
	}
	if d := str("dst"); d != "" {
		if port := str("dport"); port != "" {
			d = net.JoinHostPort(d, port)
		}
		parts = append(parts, d)
	}
	if n := str("name"); n != "" {
		parts = append(parts, n)
	}
	if q := str("qtype"); q != "" {
		parts = append(parts, q)
	}
	if len(parts) == 0 {
		return ""
	}
	if n, ok := r.Fields["count"].(float64); ok && n > 1 {
		parts = append(parts, "x"+scalar(n))
	}
	if n, ok := r.Fields["dropped"].(float64); ok && n > 0 {
		parts = append(parts, "(+"+scalar(n)+" unrecorded)")
	}
	return strings.Join(parts, " ")
}

// refsText shows the gate's refs member (docs/audit.md, Channel gate) as
// "REF OLD..NEW" per ref with seven-digit ids; another shape prints as JSON.
func refsText(v any) string {
	list, ok := v.([]any)
	if !ok {
		return scalar(v)
	}
	short := func(id any) string {
		s, _ := id.(string)
		if len(s) > 7 {
			s = s[:7]
		}
		if s == "" {
			s = "-"
		}
		return s
	}
	var out []string
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return scalar(v)
		}
		out = append(out, scalar(m["ref"])+" "+short(m["old"])+".."+short(m["new"]))
	}
	return strings.Join(out, ", ")
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// TableHeader is the first line of the human timeline.
func TableHeader() string { return formatRow(Row{"TIME", "CHANNEL", "WHAT", "OUTCOME"}) }

// FormatRow is one table line; fixed widths so a followed timeline lines up
// without knowing the rows to come.
func FormatRow(r audit.Record) string { return formatRow(RowOf(r)) }

func formatRow(r Row) string {
	return fmt.Sprintf("%-24s  %-7s  %-60s  %s", r.Time, r.Channel, r.What, r.Outcome)
}

// WriteJSONLine writes r as one JSON line, the record as the daemon wrote it.
func WriteJSONLine(w io.Writer, r audit.Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit record: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Count is one entry of a summary's ranking.
type Count struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// Summary is what a reviewer reads first about a task.
type Summary struct {
	Task    string `json:"task"`
	Project string `json:"project,omitempty"`
	Records int    `json:"records"`
	// First and Last are the times of the oldest and newest record.
	First *time.Time `json:"first,omitempty"`
	Last  *time.Time `json:"last,omitempty"`
	// Outcomes counts records per channel and outcome.
	Outcomes map[string]map[string]int `json:"outcomes"`
	// Reasons counts refusals and errors per "channel reason".
	Reasons []Count `json:"reasons"`
	// Destinations are the ten most frequent "channel destination".
	Destinations []Count `json:"destinations"`
	// Bytes sums, per channel, every numeric member whose name contains
	// "bytes" (request and response bytes of the proxy, pack bytes of the
	// gate).
	Bytes map[string]map[string]int64 `json:"bytes"`
	// Attempts sums, per channel, the count member (a shield record stands
	// for count refused attempts) and Unrecorded the dropped member
	// (attempts in no record).
	Attempts   map[string]int64 `json:"attempts,omitempty"`
	Unrecorded map[string]int64 `json:"unrecorded,omitempty"`
}

// TopN is how many destinations a summary ranks.
const TopN = 10

// Summarize counts recs.
func Summarize(task, project string, recs []audit.Record) Summary {
	s := Summary{Task: task, Project: project, Records: len(recs),
		Outcomes: map[string]map[string]int{}, Bytes: map[string]map[string]int64{}}
	reasons, dests := map[string]int{}, map[string]int{}
	for i, r := range recs {
		if i == 0 || r.Time.Before(*s.First) {
			t := r.Time.UTC()
			s.First = &t
		}
		if i == 0 || r.Time.After(*s.Last) {
			t := r.Time.UTC()
			s.Last = &t
		}
		if s.Outcomes[r.Channel] == nil {
			s.Outcomes[r.Channel] = map[string]int{}
		}
		s.Outcomes[r.Channel][r.Outcome]++
		if r.Reason != "" {
			reasons[r.Channel+" "+r.Reason]++
		}
		for _, k := range destMembers[r.Channel] {
			if v, ok := r.Fields[k]; ok && scalar(v) != "" {
				dests[r.Channel+" "+scalar(v)]++
				break
			}
		}
		if n, ok := r.Fields["count"].(float64); ok {
			if s.Attempts == nil {
				s.Attempts = map[string]int64{}
			}
			s.Attempts[r.Channel] += int64(n)
		}
		if n, ok := r.Fields["dropped"].(float64); ok && n > 0 {
			if s.Unrecorded == nil {
				s.Unrecorded = map[string]int64{}
			}
			s.Unrecorded[r.Channel] += int64(n)
		}
		for k, v := range r.Fields {
			n, ok := v.(float64)
			if !ok || !strings.Contains(k, "bytes") {
				continue
			}
			if s.Bytes[r.Channel] == nil {
				s.Bytes[r.Channel] = map[string]int64{}
			}
			s.Bytes[r.Channel][k] += int64(n)
		}
	}
	s.Reasons = ranked(reasons, 0)
	s.Destinations = ranked(dests, TopN)
	return s
}

// ranked orders counts by count then name; n > 0 keeps the first n.
func ranked(m map[string]int, n int) []Count {
	out := make([]Count, 0, len(m))
	for k, v := range m {
		out = append(out, Count{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// WriteSummary prints s for a person.
func WriteSummary(w io.Writer, s Summary) error {
	var b strings.Builder
	who := s.Task
	if s.Project != "" {
		who = s.Project + "/" + s.Task
	}
	fmt.Fprintf(&b, "Task %s: %d records", who, s.Records)
	if s.First != nil {
		fmt.Fprintf(&b, " from %s to %s", s.First.Format(TimeLayout), s.Last.Format(TimeLayout))
	}
	b.WriteString("\n\nPer channel and outcome:\n")
	chans := make([]string, 0, len(s.Outcomes))
	for c := range s.Outcomes {
		chans = append(chans, c)
	}
	sort.Strings(chans)
	for _, c := range chans {
		outs := make([]string, 0, len(s.Outcomes[c]))
		total := 0
		for o, n := range s.Outcomes[c] {
			outs = append(outs, fmt.Sprintf("%s %d", o, n))
			total += n
		}
		sort.Strings(outs)
		fmt.Fprintf(&b, "  %-7s %5d  %s\n", c, total, strings.Join(outs, ", "))
	}
	if len(s.Reasons) > 0 {
		b.WriteString("\nRefusal and error reasons:\n")
		for _, c := range s.Reasons {
			fmt.Fprintf(&b, "  %5d  %s\n", c.Count, c.Name)
		}
	}
	if len(s.Destinations) > 0 {
		b.WriteString("\nTop destinations:\n")
		for _, c := range s.Destinations {
			fmt.Fprintf(&b, "  %5d  %s\n", c.Count, c.Name)
		}
	}
	if len(s.Attempts) > 0 {
		b.WriteString("\nAttempts (records carrying a count):\n")
		for _, c := range sortedKeys(s.Attempts) {
			fmt.Fprintf(&b, "  %-7s %d", c, s.Attempts[c])
			if u := s.Unrecorded[c]; u > 0 {
				fmt.Fprintf(&b, " (%d more not recorded)", u)
			}
			b.WriteString("\n")
		}
	}
	if len(s.Bytes) > 0 {
		b.WriteString("\nBytes:\n")
		bc := make([]string, 0, len(s.Bytes))
		for c := range s.Bytes {
			bc = append(bc, c)
		}
		sort.Strings(bc)
		for _, c := range bc {
			keys := make([]string, 0, len(s.Bytes[c]))
			for k := range s.Bytes[c] {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(&b, "  %-7s %-20s %d\n", c, k, s.Bytes[c][k])
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
