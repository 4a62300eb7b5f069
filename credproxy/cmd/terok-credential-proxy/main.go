// Command terok-credential-proxy swaps phantom tokens for real credentials
// on the way to an API provider (credential-proxy.md).
package main

import (
	"os"

	"terok.dev/sandbox/credproxy/internal/server"
)

func main() { os.Exit(server.Main(os.Args[1:], os.Stderr)) }
