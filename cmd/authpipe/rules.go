package main

import (
	"fmt"
	"io"

	"github.com/authpipe/authpipe/internal/thresholds"
)

// rulesCommand: `authpipe rules check FILE…` and `authpipe rules test FILE…`.
// Exit 0 when all is well, 1 when a file has problems or a test fails, 2 on
// a usage error.
func rulesCommand(args []string, stdout, stderr io.Writer) int {
	const use = "usage: authpipe rules check FILE… | authpipe rules test FILE…"
	if len(args) < 2 {
		fmt.Fprintln(stderr, use)
		return 2
	}
	var err error
	switch args[0] {
	case "check":
		err = thresholds.CheckFiles(args[1:], stdout)
	case "test":
		err = thresholds.TestFiles(args[1:], stdout)
	default:
		fmt.Fprintln(stderr, use)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
