package rules

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// CheckFiles validates rule files (`authpipe rules check FILE…`). Each path
// is a rule file or a directory of *.yml files, checked on its own. It
// writes one line per path ("path: N rules OK") or one line per problem
// ("file:line: rule "X": field "window": …") to w, and returns an error if
// any path has a problem.
func CheckFiles(paths []string, w io.Writer) error {
	if len(paths) == 0 {
		return errors.New("rules check: no files given")
	}
	bad := 0
	for _, p := range paths {
		rs, err := Load(p)
		if err != nil {
			bad++
			fmt.Fprintln(w, strings.TrimRight(err.Error(), "\n"))
			continue
		}
		fmt.Fprintf(w, "%s: %d rules OK\n", p, len(rs.Rules))
	}
	if bad > 0 {
		return fmt.Errorf("rules check: %d of %d paths have errors", bad, len(paths))
	}
	return nil
}
