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

// Redact returns a copy of argv with the values of sensitive environment
// variables replaced, for the forms `-e NAME=value`, `--env NAME=value`,
// `-e=NAME=value` and `--env=NAME=value`. Other arguments are unchanged.
func Redact(argv []string) []string {
	out := make([]string, len(argv))
	copy(out, argv)
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
