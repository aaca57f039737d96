package rules

import "slices"

// Schedule describes the rule's schedule ("every 30s" or "cron */1 * * * *").
func (r *Rule) Schedule() string {
	if r.Cron != "" {
		return "cron " + r.Cron
	}
	return "every " + r.Every.String()
}

// CountsType reports whether a rule of the set counts events of type typ.
func (s *Set) CountsType(typ string) bool {
	if s == nil {
		return false
	}
	return slices.ContainsFunc(s.Rules, func(r *Rule) bool { return r.InTypes(typ) || r.InRatioOf(typ) })
}
