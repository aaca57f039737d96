package forward

import (
	"fmt"
	"slices"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Filter selects, by Auth0 log type code, the events forwarded to Segment.
// An event it filters out is acknowledged in the buffer without being sent
// (the policy decided; nothing is lost by accident) and counted in
// authpipe_forward_events_filtered_total. The filter applies to forwarding
// only: the threshold checks read the buffer through a consumer group of
// their own and still see every event.
type Filter struct {
	Include []string // forward only these types; empty: every type
	Exclude []string // never forward these types; wins over Include
}

// Filter reasons: the values of the reason label.
const (
	FilterInclude = "include" // the type is not in a non-empty Include
	FilterExclude = "exclude" // the type is in Exclude
)

var filterReasons = []string{FilterInclude, FilterExclude}

// validate reports codes that are not Auth0 log types.
func (f Filter) validate() error {
	for _, list := range []struct {
		name  string
		codes []string
	}{{"include", f.Include}, {"exclude", f.Exclude}} {
		for _, c := range list.codes {
			if _, ok := auth0log.LookupType(c); !ok {
				return fmt.Errorf("filter %s: %q is not an Auth0 log type code", list.name, c)
			}
		}
	}
	return nil
}

// Drop reports whether an event of type code is filtered out, and why
// (FilterInclude or FilterExclude).
func (f Filter) Drop(code string) (reason string, drop bool) {
	if slices.Contains(f.Exclude, code) {
		return FilterExclude, true
	}
	if len(f.Include) > 0 && !slices.Contains(f.Include, code) {
		return FilterInclude, true
	}
	return "", false
}
