package launch

import "strings"

// Redacted replaces a secret value in the printed command line.
const Redacted = "<redacted>"

// SensitiveName reports whether an environment variable's value must not be
// printed (docs/runner.md, Redaction): the name contains KEY, TOKEN, SECRET, API, PASSWORD or
// PRIVATE (case-insensitive), or is exactly CODE_REPO or CLONE_FROM (gate
// URLs embed a token).
func SensitiveName(name string) bool {
	if name == "CODE_REPO" || name == "CLONE_FROM" {
		return true
	}
	up := strings.ToUpper(name)
	for _, w := range [...]string{"KEY", "TOKEN", "SECRET", "API", "PASSWORD", "PRIVATE"} {
		if strings.Contains(up, w) {
			return true
		}
	}
	return false
}

// redactPair redacts "NAME=value" when NAME is sensitive.
func redactPair(kv string) string {
	name, _, ok := strings.Cut(kv, "=")
	if ok && SensitiveName(name) {
		return name + "=" + Redacted
	}
	return kv
}

// redactUserinfo replaces the user information of every URL in s
// (`scheme://USER[:PASS]@host`): a gate URL carries the task's token there,
// whatever the variable or argument holding it is called.
func redactUserinfo(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		// The authority ends at the path, query, fragment or the end of the
		// word; its user information at its last '@'.
		end := strings.IndexAny(s, "/?# \t\n'\"")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndexByte(s[:end], '@'); at >= 0 {
			b.WriteString(Redacted)
			s = s[at:]
		}
	}
}

// Redact returns a copy of argv with the values of sensitive environment
// variables replaced, for the forms `-e NAME=value`, `--env NAME=value`,
// `-e=NAME=value` and `--env=NAME=value`, and the user information of
// every URL in any argument. Other arguments are unchanged.
func Redact(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = redactUserinfo(a)
	}
	for i := 0; i < len(out); i++ {
		switch a := out[i]; {
		case (a == "-e" || a == "--env") && i+1 < len(out):
			out[i+1] = redactPair(out[i+1])
			i++
		case strings.HasPrefix(a, "-e="):
			out[i] = "-e=" + redactPair(a[len("-e="):])
		case strings.HasPrefix(a, "--env="):
			out[i] = "--env=" + redactPair(a[len("--env="):])
		}
	}
	return out
}

// Quote renders one argument for a POSIX shell: unchanged when it contains
// only characters no shell treats specially, else single-quoted.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// CommandLine is the printed form of a command: each argument redacted and
// shell-quoted, joined by spaces.
func CommandLine(program string, args []string) string {
	red := Redact(args)
	parts := make([]string, 0, len(red)+1)
	parts = append(parts, Quote(program))
	for _, a := range red {
		parts = append(parts, Quote(a))
	}
	return strings.Join(parts, " ")
}
