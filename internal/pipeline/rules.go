package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/authpipe/authpipe/alerts"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// DefaultRulesPath is the rule file used when AUTHPIPE_RULES is unset and
// the file exists (relative to the working directory).
const DefaultRulesPath = "alerts/thresholds.yml"

// BuiltInRulesName names the shipped rules embedded in the binary, in logs
// and in the errors of rule validation (they are no file).
const BuiltInRulesName = "built-in:alerts/thresholds.yml"

// RulesSource is where the threshold rules come from.
type RulesSource struct {
	Path string // AUTHPIPE_RULES, the default file, or BuiltInRulesName
	Data []byte // the embedded rules; nil: read Path
}

// BuiltIn reports whether the rules are the shipped ones built in.
func (r RulesSource) BuiltIn() bool { return r.Data != nil }

// ResolveRules finds the threshold rules for AUTHPIPE_RULES (setting):
// a path that is set is used as it is (missing is an error, reported when
// it is read); unset, alerts/thresholds.yml if it exists, else the shipped
// rules embedded in the binary, so the binary runs from any directory.
func ResolveRules(setting string) (RulesSource, error) {
	if setting != "" {
		return RulesSource{Path: setting}, nil
	}
	_, err := os.Stat(DefaultRulesPath)
	switch {
	case err == nil:
		return RulesSource{Path: DefaultRulesPath}, nil
	case errors.Is(err, fs.ErrNotExist):
		return RulesSource{Path: BuiltInRulesName, Data: alerts.Thresholds}, nil
	default:
		// Present but unreadable: falling back would hide the operator's file.
		return RulesSource{}, fmt.Errorf("AUTHPIPE_RULES unset: default %s: %w", DefaultRulesPath, err)
	}
}

// Load loads and validates the rules.
func (r RulesSource) Load() (*rules.Set, error) {
	if r.BuiltIn() {
		return rules.LoadData(r.Path, r.Data)
	}
	return rules.Load(r.Path)
}
