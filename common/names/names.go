// Package names validates the identifiers that become parts of host paths
// and podman arguments: container names, project ids and task ids
// (docs/runner.md, Names). All three follow podman's container-name rule,
// so a name that passes is also one podman accepts, and it can never climb
// out of the directory it is joined to: it has no '/', cannot be "." or
// "..", and never starts with '-' (which podman would read as a flag).
//
// Every entry point (CLI and Go API) checks a name with these functions
// before anything derived from it touches the disk.
package names

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds every name. Podman itself has no small limit, but a name
// becomes a directory name (NAME_MAX is 255), a systemd-style log field and
// part of longer file names, so a generous fixed bound keeps every derived
// path valid.
const MaxLen = 128

// Kind says what a name stands for; it shapes the error message.
type Kind int

// The kinds of names.
const (
	ContainerName Kind = iota
	ProjectID
	TaskID
)

func (k Kind) String() string {
	switch k {
	case ContainerName:
		return "container name"
	case ProjectID:
		return "project id"
	case TaskID:
		return "task id"
	}
	return "name"
}

func (k Kind) example() string {
	switch k {
	case ProjectID:
		return "my-project"
	case TaskID:
		return "task-42"
	}
	return "myproj-task-42"
}

// Error is a rejected name. Its message says what is wrong and gives an
// example of a valid name.
type Error struct {
	Kind   Kind
	Name   string
	Reason string
}

func (e *Error) Error() string {
	shown := e.Name
	if len(shown) > showMax {
		shown = shown[:showMax] + "..."
	}
	return fmt.Sprintf("invalid %s %q: %s; use 1 to %d letters, digits, '_', '.' or '-', starting with a letter or digit (e.g. %q)",
		e.Kind, shown, e.Reason, MaxLen, e.Kind.example())
}

// showMax bounds how much of a rejected name the message repeats: the name
// is untrusted input and may be huge.
const showMax = 64

// ValidateContainerName checks a podman container name.
func ValidateContainerName(name string) error { return Validate(ContainerName, name) }

// ValidateProjectID checks a project id.
func ValidateProjectID(id string) error { return Validate(ProjectID, id) }

// ValidateTaskID checks a task id.
func ValidateTaskID(id string) error { return Validate(TaskID, id) }

// Validate checks name against podman's rule ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$
// and the length bound. The rule alone already excludes "", ".", "..",
// '/', NUL and a leading '-'; the reasons below name the most specific
// problem for the message.
func Validate(kind Kind, name string) error {
	reason := ""
	switch {
	case name == "":
		reason = "it is empty"
	case len(name) > MaxLen:
		reason = fmt.Sprintf("it is %d bytes long", len(name))
	case strings.ContainsRune(name, '/'):
		reason = "it contains '/'"
	case strings.ContainsRune(name, 0):
		reason = "it contains a NUL byte"
	case name[0] == '-':
		reason = "it starts with '-'"
	case name[0] == '.' || name[0] == '_':
		reason = fmt.Sprintf("it starts with %q", name[0])
	default:
		if i := strings.IndexFunc(name, func(r rune) bool { return !allowed(r) }); i >= 0 {
			r, _ := utf8.DecodeRuneInString(name[i:])
			reason = fmt.Sprintf("it contains %q", r)
		}
	}
	if reason == "" {
		return nil
	}
	return &Error{Kind: kind, Name: name, Reason: reason}
}

func allowed(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-'
}

// LowerHex reports whether s is min to max lowercase hex digits (a
// container id, a request id). A regexp such as `^[0-9a-f]{8,64}$`
// expands its repetition into one instruction per repeat when the package
// initialises: 0.3-0.4 ms of start-up in every process that links it,
// and the hook and terok-sandbox start several per container
// (docs/shield.md, Performance).
func LowerHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// TaskRef names one task: its project and its task id (each checked by
// ValidateProjectID and ValidateTaskID where it is stored). A value rather
// than two strings side by side, so the two cannot be swapped across a call.
type TaskRef struct {
	Project, Task string
}

// String renders the reference as project/task, the form errors use.
func (t TaskRef) String() string { return t.Project + "/" + t.Task }

// CredentialKey names one credential row: its credential set and its
// provider. A struct, not two strings side by side: the provider and the
// set were once swapped across one call hop without any compiler noticing.
// creddb.CredentialKey is this type; secretstore.CredentialAD binds a
// sealed value to it.
type CredentialKey struct {
	Set      string // credential set, e.g. creddb.DefaultSet
	Provider string // provider name, e.g. "claude"
}

// String renders the key as set/provider, the form errors and logs use.
func (k CredentialKey) String() string { return k.Set + "/" + k.Provider }
