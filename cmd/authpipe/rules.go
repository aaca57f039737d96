package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/authpipe/authpipe/alerts"
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

// defaultRulesPath is the rule file used when AUTHPIPE_RULES is unset and
// the file exists (relative to the working directory).
const defaultRulesPath = "alerts/thresholds.yml"

// builtInRulesName names the shipped rules embedded in the binary, in logs
// and in the errors of rule validation (they are no file).
const builtInRulesName = "built-in:alerts/thresholds.yml"

// rulesSource is where the threshold rules come from.
type rulesSource struct {
	path string // AUTHPIPE_RULES, the default file, or builtInRulesName
	data []byte // the embedded rules; nil: read path
}

func (r rulesSource) builtIn() bool { return r.data != nil }

// resolveRules finds the threshold rules for AUTHPIPE_RULES (setting):
// a path that is set is used as it is (missing is an error, reported when
// it is read); unset, alerts/thresholds.yml if it exists, else the shipped
// rules embedded in the binary, so the binary runs from any directory.
func resolveRules(setting string) (rulesSource, error) {
	if setting != "" {
		return rulesSource{path: setting}, nil
	}
	_, err := os.Stat(defaultRulesPath)
	switch {
	case err == nil:
		return rulesSource{path: defaultRulesPath}, nil
	case errors.Is(err, fs.ErrNotExist):
		return rulesSource{path: builtInRulesName, data: alerts.Thresholds}, nil
	default:
		// Present but unreadable: falling back would hide the operator's file.
		return rulesSource{}, fmt.Errorf("AUTHPIPE_RULES unset: default %s: %w", defaultRulesPath, err)
	}
}

// load loads and validates the rules.
func (r rulesSource) load() (*rules.Set, error) {
	if r.builtIn() {
		return rules.LoadData(r.path, r.data)
	}
	return rules.Load(r.path)
}
