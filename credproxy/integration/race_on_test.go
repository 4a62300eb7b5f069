//go:build race

package integration

// raceEnabled builds the proxy under test with the race detector too.
const raceEnabled = true
