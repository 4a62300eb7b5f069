// Package version carries the release string stamped into every binary.
package version

// Version is overridden at link time: -ldflags "-X terok.dev/sandbox/common/version.Version=v1.2.3".
// It is a var only because the linker can set nothing else.
var Version = "0.1.0-dev"

// String returns "<program> <version>", the form every --version flag prints.
func String(program string) string { return program + " " + Version }
