// Package gatepolicy is the gate's per-project push policy file
// (docs/gate.md, Push policy): protected ref patterns, whether
// non-fast-forward pushes and deletions are allowed, and an optional
// per-task namespace. The runner writes it (`terok-sandbox gate policy`),
// the gate reads it on every push.
package gatepolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"terok.dev/sandbox/common/atomicfile"
	"terok.dev/sandbox/common/filelock"
)

// Version is the format version this package writes and fully understands.
const Version = 1

// HeadPattern protects the branch the mirror's HEAD points to (its
// default branch), whatever it is called.
const HeadPattern = "HEAD"

// TaskPlaceholder is replaced by the pushing task's name in TaskNamespace.
const TaskPlaceholder = "{task}"

// Policy is one project's push policy. The zero value is not the default:
// use Default.
type Policy struct {
	V                   int      `json:"v"`
	Protect             []string `json:"protect"`
	AllowNonFastForward bool     `json:"allow_non_fast_forward"`
	AllowDeletions      bool     `json:"allow_deletions"`
	// TaskNamespace, when set, is the only place a task may push to, with
	// {task} standing for its name (e.g. refs/heads/terok/{task}/*).
	TaskNamespace string `json:"task_namespace,omitempty"`
}

// Default is the policy of a project without a file: the default branch
// and every tag are protected, no force pushes, no deletions, no namespace.
func Default() Policy {
	return Policy{V: Version, Protect: []string{HeadPattern, "refs/tags/*"}}
}

// File is the policy file of project under dir.
func File(dir, project string) string { return filepath.Join(dir, project+".json") }

// Load reads project's policy. A missing file is the Default (found
// false). A file that does not parse, fails Validate, or has a newer
// version than this reader knows is an error: the gate then refuses task
// pushes rather than guess (it may say more than this reader can enforce).
func Load(dir, project string) (p Policy, found bool, err error) {
	path := File(dir, project)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Default(), false, nil
	}
	if err != nil {
		return Policy{}, false, fmt.Errorf("gate policy %s: %w", path, err)
	}
	p, err = Parse(data)
	if err != nil {
		return Policy{}, true, fmt.Errorf("gate policy %s: %w", path, err)
	}
	return p, true, nil
}

// Parse decodes and validates a policy file; unknown members are ignored.
func Parse(data []byte) (Policy, error) {
	var p Policy
	if err := json.Unmarshal(data, &p); err != nil {
		return Policy{}, fmt.Errorf("not valid JSON: %w", err)
	}
	if p.V < 1 {
		return Policy{}, errors.New(`member "v" (format version) missing`)
	}
	if p.V > Version {
		return Policy{}, fmt.Errorf("format version %d is newer than this program's %d; upgrade terok-sandbox", p.V, Version)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Save validates p and writes it atomically under dir/PROJECT.json.lock.
func Save(dir, project string, p Policy) error {
	p.V = Version
	if p.Protect == nil {
		p.Protect = []string{}
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return fmt.Errorf("gate policy directory %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	lk, err := filelock.Exclusive(File(dir, project) + ".lock")
	if err != nil {
		return fmt.Errorf("gate policy lock: %w", err)
	}
	defer lk.Close()
	if err := atomicfile.WriteFile(File(dir, project), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write gate policy: %w", err)
	}
	return nil
}

// Update changes project's policy with fn under the lock (read, change,
// write), starting from Default when there is no file yet.
func Update(dir, project string, fn func(*Policy) error) (Policy, error) {
	if err := atomicfile.MkdirPrivate(dir); err != nil {
		return Policy{}, fmt.Errorf("gate policy directory %s: %w", dir, err)
	}
	lk, err := filelock.Exclusive(File(dir, project) + ".lock")
	if err != nil {
		return Policy{}, fmt.Errorf("gate policy lock: %w", err)
	}
	defer lk.Close()
	p, _, err := Load(dir, project)
	if err != nil {
		return Policy{}, err
	}
	if err := fn(&p); err != nil {
		return Policy{}, err
	}
	p.V = Version
	if p.Protect == nil {
		p.Protect = []string{}
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return Policy{}, err
	}
	if err := atomicfile.WriteFile(File(dir, project), append(data, '\n'), 0o644); err != nil {
		return Policy{}, fmt.Errorf("write gate policy: %w", err)
	}
	return p, nil
}

// Validate checks every pattern.
func (p Policy) Validate() error {
	for _, pat := range p.Protect {
		if err := CheckPattern(pat); err != nil {
			return err
		}
	}
	if p.TaskNamespace != "" {
		if err := CheckNamespace(p.TaskNamespace); err != nil {
			return err
		}
	}
	return nil
}

// CheckPattern accepts HEAD or a full ref name under refs/ in which "*"
// stands for any run of characters, "/" included.
func CheckPattern(pat string) error {
	if pat == HeadPattern {
		return nil
	}
	if err := CheckRefName(strings.ReplaceAll(pat, "*", "x")); err != nil {
		return fmt.Errorf("ref pattern %q: %v (a pattern is HEAD or a ref name under refs/ where * matches anything, e.g. refs/heads/release/*)", pat, err)
	}
	if strings.Contains(pat, "**") {
		return fmt.Errorf("ref pattern %q: ** is not a pattern (* already matches across /), e.g. refs/heads/release/*", pat)
	}
	return nil
}

// CheckNamespace accepts a pattern (as CheckPattern, not HEAD) holding
// {task} once.
func CheckNamespace(ns string) error {
	if strings.Count(ns, TaskPlaceholder) != 1 {
		return fmt.Errorf("task namespace %q must contain %s exactly once, e.g. refs/heads/terok/{task}/*", ns, TaskPlaceholder)
	}
	pat := strings.Replace(ns, TaskPlaceholder, "task", 1)
	if pat == HeadPattern {
		return fmt.Errorf("task namespace %q: not a ref pattern", ns)
	}
	if err := CheckPattern(pat); err != nil {
		return fmt.Errorf("task namespace %q: %v", ns, err)
	}
	return nil
}

// Match reports whether ref matches pattern: "*" matches any run of
// characters (also "/" and none), everything else itself. HEAD is resolved
// by the caller (see Decide).
func Match(pattern, ref string) bool {
	return match(strings.Split(pattern, "*"), ref)
}

// match matches ref against literal parts separated by stars.
func match(parts []string, ref string) bool {
	if len(parts) == 1 {
		return parts[0] == ref
	}
	if !strings.HasPrefix(ref, parts[0]) {
		return false
	}
	ref = ref[len(parts[0]):]
	last := parts[len(parts)-1]
	if len(ref) < len(last) || !strings.HasSuffix(ref, last) {
		return false
	}
	ref = ref[:len(ref)-len(last)]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(ref, mid)
		if i < 0 {
			return false
		}
		ref = ref[i+len(mid):]
	}
	return true
}

// Update is one requested ref change, as the gate read it from the push.
type RefUpdate struct {
	Ref    string
	Delete bool
}

// Refusal says why one ref update is refused.
type Refusal struct {
	Ref    string
	Reason string // protected-ref, namespace, deletion (docs/audit.md, Channel gate)
	Msg    string
}

// Push is what a task's ref updates are decided against. One value rather
// than two strings side by side: swapped, the task's namespace would be
// checked against the mirror's HEAD and the protected branch against the
// task id.
type Push struct {
	// Head is the ref the mirror's HEAD points to ("" when it points
	// nowhere).
	Head string
	// Task is the pushing task.
	Task string
}

// Decide applies p to a task's ref updates in push.
// Non-fast-forward updates are not decided here: the gate has git refuse
// them (receive.denyNonFastForwards) unless AllowNonFastForward.
func (p Policy) Decide(updates []RefUpdate, push Push) []Refusal {
	head, task := push.Head, push.Task
	var out []Refusal
	for _, u := range updates {
		switch {
		case p.TaskNamespace != "" && !p.inNamespace(u.Ref, task):
			out = append(out, Refusal{u.Ref, "namespace", fmt.Sprintf("%s is outside task %s's namespace %s",
				u.Ref, task, strings.Replace(p.TaskNamespace, TaskPlaceholder, task, 1))})
		case p.protects(u.Ref, head):
			out = append(out, Refusal{u.Ref, "protected-ref", u.Ref + " is protected"})
		case u.Delete && !p.AllowDeletions:
			out = append(out, Refusal{u.Ref, "deletion", "deleting " + u.Ref + " is not allowed"})
		}
	}
	return out
}

func (p Policy) protects(ref, head string) bool {
	for _, pat := range p.Protect {
		if pat == HeadPattern {
			if head != "" && ref == head {
				return true
			}
			continue
		}
		if Match(pat, ref) {
			return true
		}
	}
	return false
}

// inNamespace matches ref against the namespace with the task name as a
// literal (a task name is never a pattern).
func (p Policy) inNamespace(ref, task string) bool {
	if task == "" {
		return false
	}
	before, after, _ := strings.Cut(p.TaskNamespace, TaskPlaceholder)
	parts := strings.Split(before, "*")
	tail := strings.Split(after, "*")
	parts[len(parts)-1] += task + tail[0]
	parts = append(parts, tail[1:]...)
	return match(parts, ref)
}

// CheckRefName applies git's rules for a full ref name (git-check-ref-format
// plus "refs/"): the gate matches patterns against exactly the name git
// would update.
func CheckRefName(ref string) error {
	switch {
	case ref == "":
		return errors.New("empty ref name")
	case len(ref) > 1024:
		return errors.New("ref name longer than 1024 bytes")
	case !strings.HasPrefix(ref, "refs/") || len(ref) == len("refs/"):
		return fmt.Errorf("ref %q does not start with refs/", ref)
	case strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, "."):
		return fmt.Errorf("ref %q ends with a slash or a dot", ref)
	case strings.Contains(ref, "..") || strings.Contains(ref, "//") || strings.Contains(ref, "@{"):
		return fmt.Errorf("ref %q contains .., // or @{", ref)
	}
	for i := 0; i < len(ref); i++ {
		c := ref[i]
		if c < 0x20 || c == 0x7f || strings.IndexByte(" ~^:?*[\\", c) >= 0 {
			return fmt.Errorf("ref %q contains a forbidden character %q", ref, c)
		}
	}
	for _, comp := range strings.Split(ref, "/") {
		if strings.HasPrefix(comp, ".") || strings.HasSuffix(comp, ".lock") {
			return fmt.Errorf("ref %q has a component starting with . or ending with .lock", ref)
		}
	}
	return nil
}
