package sandbox

import "terok.dev/sandbox/runner/internal/launch"

// GPURunArgs are the podman arguments that give a container the host's
// NVIDIA GPUs through CDI (docs/runner.md); none when enabled is false.
// Run adds them itself for RunSpec.GPUEnabled.
func GPURunArgs(enabled bool) []string {
	if !enabled {
		return nil
	}
	return launch.GPUArgs()
}

// RedactEnvArgs returns a copy of a podman argument list with the values
// of sensitive environment variables (tokens, keys, passwords) replaced,
// in the forms -e NAME=value, --env NAME=value, -e=… and --env=…; it is
// what Run prints. Other arguments are unchanged.
func RedactEnvArgs(argv []string) []string { return launch.Redact(argv) }
