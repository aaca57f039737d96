package main

import (
	"fmt"
	"io"
)

// rulesCommand: `authpipe rules check FILE…` and `authpipe rules test FILE…`.
func rulesCommand(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "authpipe rules: pending wiring")
	return 2
}
