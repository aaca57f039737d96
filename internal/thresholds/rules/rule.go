package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Group and distinct fields: the Auth0 log fields a rule may count by.
const (
	FieldIP         = "ip"
	FieldUserID     = "user_id"
	FieldUserName   = "user_name"
	FieldClientID   = "client_id"
	FieldConnection = "connection"
)

// Fields lists the group and distinct fields in a fixed order: an event's
// values of them are kept in this order (FieldIndex).
var Fields = [...]string{FieldIP, FieldUserID, FieldUserName, FieldClientID, FieldConnection}

// FieldIndex returns name's position in Fields, -1 if it is none of them.
func FieldIndex(name string) int { return slices.Index(Fields[:], name) }

// Severities a rule may carry.
var severities = []string{"critical", "warning", "info"}

// Limits on rule values.
const (
	// MinWindow and MaxWindow bound a rule's window: counts live in Redis for
	// one window, so the window bounds memory.
	MinWindow = time.Second
	MaxWindow = 7 * 24 * time.Hour
	// MinEvery is the shortest schedule interval.
	MinEvery = time.Second
	// DefaultEvery is the schedule of a rule that sets neither every nor cron.
	DefaultEvery = time.Minute
	// DefaultSeverity is the severity of a rule that sets none.
	DefaultSeverity = "warning"
	// BucketsPerWindow is how many event-time buckets a window is cut into
	// (at least one second each): a count covers at least the window and at
	// most one bucket more.
	BucketsPerWindow = 30
)

// Annotations that authpipe sets on every alert; a rule may not set them.
const (
	AnnotationValue        = "value"
	AnnotationThreshold    = "threshold"
	AnnotationWindow       = "window"
	AnnotationTopOffenders = "top_offenders"
	AnnotationGroupsCut    = "groups_cut"
)

var reservedAnnotations = []string{AnnotationValue, AnnotationThreshold, AnnotationWindow, AnnotationTopOffenders, AnnotationGroupsCut}

// Labels that authpipe sets on every alert; a rule's labels may not set them.
var reservedLabels = []string{"alertname", "severity", "tenant"}

// ReservedNamePrefix starts the names of authpipe's own health alerts
// (alerts/prometheus/); a threshold rule's name, its alertname, may not.
const ReservedNamePrefix = "Authpipe"

var (
	ruleNamePattern  = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	labelNamePattern = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Rule is one threshold rule, as loaded from a rule file.
//
// A rule counts the events whose type is in Types, in event-time windows of
// Window (by the log's date), per value of GroupBy (or all together), and is
// breached for a group when the value reaches Threshold. The value is:
//
//   - a count rule: the number of events;
//   - a distinct rule (Distinct set): the number of distinct values of that
//     field among the events;
//   - a ratio rule (Ratio set): events of Types divided by events of
//     Ratio.Of, evaluated only for groups with at least MinEvents events of
//     Ratio.Of in the window (default 1).
type Rule struct {
	Name        string
	Types       []string
	GroupBy     string
	Distinct    string
	Ratio       *Ratio
	MinEvents   int64
	Window      time.Duration
	Threshold   float64
	Every       time.Duration // zero when Cron is set
	Cron        string
	Severity    string
	Labels      map[string]string
	Annotations map[string]string

	// File and Line locate the rule (its "name" key, else its first line).
	File string
	Line int

	types       map[string]bool
	of          map[string]bool
	bucket      time.Duration
	countFP     string // fingerprint of what is counted and how: names the Redis keys
	alertFP     string // fingerprint of countFP and the alert labels
	annotations map[string]*template.Template
}

// Ratio makes a rule a ratio rule: its value is events of the rule's types
// divided by events of Of.
type Ratio struct {
	Of []string
}

// Kind is what a rule's value is.
type Kind int

// Rule kinds.
const (
	KindCount    Kind = iota // the number of events
	KindDistinct             // the number of distinct values of Distinct
	KindRatio                // events of Types / events of Ratio.Of
)

// Kind returns the rule's kind.
func (r *Rule) Kind() Kind {
	switch {
	case r.Ratio != nil:
		return KindRatio
	case r.Distinct != "":
		return KindDistinct
	default:
		return KindCount
	}
}

// Bucket returns the event-time bucket size of the rule's window.
func (r *Rule) Bucket() time.Duration { return r.bucket }

// Realtime reports whether the rule is also evaluated as events are counted:
// count and distinct rules are; ratio rules only on schedule.
func (r *Rule) Realtime() bool { return r.Kind() != KindRatio }

// InTypes reports whether the rule counts events of type typ (its types).
func (r *Rule) InTypes(typ string) bool { return r.types[typ] }

// InRatioOf reports whether events of type typ count in the rule's
// denominator (ratio.of).
func (r *Rule) InRatioOf(typ string) bool { return r.of[typ] }

// MinDenominator is the fewest events of ratio.of a group needs in a window
// to be evaluated: MinEvents, at least 1.
func (r *Rule) MinDenominator() float64 {
	if r.MinEvents < 1 {
		return 1
	}
	return float64(r.MinEvents)
}

// DistinctCap is how many distinct values of one group a bucket keeps: twice
// the threshold (at least 10) is enough to decide a breach exactly, since a
// group that saturates one bucket is over the threshold already.
func (r *Rule) DistinctCap() int64 {
	c := int64(math.Ceil(r.Threshold)) * 2
	return min(max(c, 10), 10000)
}

// CountFingerprint identifies what the rule counts and how (types, group_by,
// distinct, window, ratio.of): it names the rule's count keys, so a change
// starts counting afresh.
func (r *Rule) CountFingerprint() string { return r.countFP }

// AlertFingerprint identifies the rule's count and its alerts' labels
// (severity, labels): an alert raised under another one belongs to a
// definition that no longer exists.
func (r *Rule) AlertFingerprint() string { return r.alertFP }

// finish derives the rule's internal fields.
func (r *Rule) finish() {
	r.types = map[string]bool{}
	for _, t := range r.Types {
		r.types[t] = true
	}
	if r.Ratio != nil {
		r.of = map[string]bool{}
		for _, t := range r.Ratio.Of {
			r.of[t] = true
		}
	}
	r.bucket = bucketFor(r.Window)
	h := sha256.New()
	sorted := func(s []string) string { return strings.Join(slices.Sorted(slices.Values(s)), ",") }
	fmt.Fprintf(h, "types=%s\ngroup=%s\ndistinct=%s\nwindow=%d\nbucket=%d\n", sorted(r.Types), r.GroupBy, r.Distinct, r.Window, r.bucket)
	if r.Ratio != nil {
		fmt.Fprintf(h, "of=%s\n", sorted(r.Ratio.Of))
	}
	r.countFP = hex.EncodeToString(h.Sum(nil))[:8]
	fmt.Fprintf(h, "severity=%s\n", r.Severity)
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		fmt.Fprintf(h, "label %q=%q\n", k, r.Labels[k])
	}
	r.alertFP = hex.EncodeToString(h.Sum(nil))[:12]
}

// bucketFor returns the bucket size of a window: window/BucketsPerWindow in
// whole seconds, at least one second.
func bucketFor(window time.Duration) time.Duration {
	b := (window / BucketsPerWindow).Truncate(time.Second)
	return max(b, time.Second)
}

// Error is one problem in a rule file: it names the file, the line, the
// rule and the field.
type Error struct {
	File  string
	Line  int
	Rule  string // `"Name"` or `#3` (1-based position) when the name is unusable
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Rule != "" {
		b.WriteString("rule " + e.Rule + ": ")
	}
	if e.Field != "" {
		b.WriteString("field " + strconv.Quote(e.Field) + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a set of rule files, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Set is a validated set of rules with unique names.
type Set struct {
	Rules  []*Rule
	Files  []string
	byName map[string]*Rule
}

// Get returns the rule called name.
func (s *Set) Get(name string) (*Rule, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.byName[name]
	return r, ok
}

// Names returns the rule names in load order.
func (s *Set) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.Rules))
	for i, r := range s.Rules {
		out[i] = r.Name
	}
	return out
}
