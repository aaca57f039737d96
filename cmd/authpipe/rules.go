package main

import (
	"fmt"
	"io"

	"github.com/authpipe/authpipe/internal/thresholds"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

const rulesUsage = `Usage:
  authpipe rules check FILE…   validate threshold rule files (or directories of *.yml)
  authpipe rules test FILE…    run threshold rule unit tests (*.test.yml)

Exit status: 0 when every file is valid (every test passes), 1 when one has
problems (a test fails), 2 on a usage error.
`

// rulesCommand: `authpipe rules check FILE…` and `authpipe rules test FILE…`.
// Exit 0 when all is well, 1 when a file has problems or a test fails, 2 on
// a usage error.
func rulesCommand(args []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		fmt.Fprint(stdout, rulesUsage)
		return 0
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	var err error
	switch args[0] {
	case "check":
		err = rules.CheckFiles(args[1:], stdout)
	case "test":
		err = thresholds.TestFiles(args[1:], stdout)
	default:
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
