// Package rules is the threshold rule file format: decoding, validation
// and `authpipe rules check` (CheckFiles).
//
// A Set that Load, LoadFiles or LoadData returns is valid as a whole, and
// nothing else is: every rule in it is complete, its names are unique
// across the files, its annotation templates passed a trial run. Anything
// wrong is an error, all of them at once (Errors), each naming file, line,
// rule and field. What a rule counts and how it alerts is package
// thresholds' (engine) and package store's (counting model) business; this
// package only says what a rule is.
//
// AUTHPIPE_RULES names a rule file or a directory of *.yml files (Files).
// Decoding is strict: an unknown field, a wrong type, a bad duration or cron
// expression, an unknown log type code (auth0log.LookupType), an unknown
// group_by or distinct field, a duplicate name (also across files) are
// errors. The format:
//
//	rules:
//	  - name: FailedLoginsPerIP   # alertname; [A-Za-z0-9_]+, unique, not Authpipe…
//	    types: [f, fp, fu]        # Auth0 log type codes counted (required)
//	    group_by: ip              # optional: ip | user_id | user_name | client_id | connection
//	    distinct: user_name       # optional: count distinct values of this field instead of events
//	    ratio: {of: [s, f, fp, fu]} # optional: value = events of types / events of ratio.of
//	    min_events: 50            # ratio rules: evaluate a group only with >= 50 events of ratio.of
//	    window: 5m                # event-time window (the log's date), 1s to 7d (required)
//	    threshold: 20             # breached when value >= threshold, > 0 (required)
//	    every: 30s                # schedule, or cron: "*/1 * * * *" (5 fields, UTC); default every 1m
//	    severity: warning         # critical | warning | info; default warning
//	    labels: {team: identity}  # extra alert labels (not alertname, severity, tenant, the group_by field)
//	    annotations:              # summary, description, runbook_url, …; Go templates over
//	      summary: "{{ .Value }} failed logins from {{ .Group }}"  # AnnotationData
//
// A ratio rule is how a failure-ratio spike is written: types are the
// failures, ratio.of the sign-on attempts (successes and failures), and
// min_events keeps a handful of attempts from making a 100 % ratio. Ratio
// rules are evaluated on schedule only (Rule.Realtime).
//
// Annotation templates may use fields, if, with and the side-effect-free
// builtins, at most 4 KiB each, so that an annotation renders in bounded
// time and size; the annotations authpipe sets itself (value, threshold,
// window, top_offenders, groups_cut) and the labels it sets (alertname,
// severity, tenant, the group_by field) are reserved.
//
// A rule's window is cut into BucketsPerWindow event-time buckets of at
// least one second (Rule.Bucket). CountFingerprint changes with what a rule
// counts (types, group_by, distinct, window, ratio.of), so that a changed
// rule counts afresh; AlertFingerprint also with its severity and labels, so
// that its alerts raised under the old definition are resolved.
package rules
