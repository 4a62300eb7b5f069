// Command terok-shield-hook is being built; for now it only knows its version.
package main

import (
	"fmt"
	"os"

	"terok.dev/sandbox/common/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		fmt.Println(version.String("terok-shield-hook"))
		return
	}
	fmt.Fprintf(os.Stderr, "usage: terok-shield-hook --version\nterok-shield-hook is not built yet.\n")
	os.Exit(2)
}
