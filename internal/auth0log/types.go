package auth0log

import (
	_ "embed"
	"fmt"
	"strings"
)

// Outcome of a log type, from Auth0's type table.
type Outcome string

const (
	Success Outcome = "success"
	Failure Outcome = "failure"
	Info    Outcome = "info"
)

// TypeInfo describes one log type code.
type TypeInfo struct {
	Code        string
	Outcome     Outcome
	Group       string // e.g. login_failure, attack_block, token_success
	Name        string // Auth0's readable event name, e.g. "Success Login"
	Description string
}

//go:embed types.tsv
var typesTSV string

var typeTable = mustParseTypes(typesTSV)

func mustParseTypes(tsv string) map[string]TypeInfo {
	table := map[string]TypeInfo{}
	for i, line := range strings.Split(strings.TrimSpace(tsv), "\n") {
		if i == 0 {
			continue // header
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			panic(fmt.Sprintf("types.tsv line %d: want 5 columns, got %d", i+1, len(f)))
		}
		info := TypeInfo{Code: f[0], Outcome: Outcome(f[1]), Group: f[2], Name: f[3], Description: f[4]}
		if info.Name == "" {
			info.Name = nameFromDescription(info.Description, info.Code)
		}
		table[info.Code] = info
	}
	return table
}

// nameFromDescription is the fallback for codes whose readable name the table
// lacks: the description's first sentence, short enough for an event name.
func nameFromDescription(desc, code string) string {
	desc = strings.TrimSpace(desc)
	if desc == "" {
		return code
	}
	if i := strings.IndexAny(desc, ".("); i > 0 {
		desc = strings.TrimSpace(desc[:i])
	}
	if len(desc) > 80 {
		desc = desc[:80]
	}
	return desc
}

// LookupType returns what Auth0's table says of a type code. Unknown codes
// (Auth0 adds new ones) report ok=false and a usable fallback: the code as
// name and outcome info.
func LookupType(code string) (TypeInfo, bool) {
	if info, ok := typeTable[code]; ok {
		return info, true
	}
	return TypeInfo{Code: code, Outcome: Info, Group: "unknown", Name: code}, false
}
