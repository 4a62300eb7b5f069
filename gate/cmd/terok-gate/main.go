// Command terok-gate is being built; for now it only knows its version.
package main

import (
	"fmt"
	"os"

	"terok.dev/sandbox/common/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(version.String("terok-gate"))
		return
	}
	fmt.Fprintf(os.Stderr, "usage: terok-gate --version\nterok-gate is not built yet.\n")
	os.Exit(2)
}
