package thresholds

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Group and distinct fields: the Auth0 log fields a rule may count by.
const (
	FieldIP         = "ip"
	FieldUserID     = "user_id"
	FieldUserName   = "user_name"
	FieldClientID   = "client_id"
	FieldConnection = "connection"
)

// groupFields lists the fields in the order of event.fields.
var groupFields = []string{FieldIP, FieldUserID, FieldUserName, FieldClientID, FieldConnection}

func fieldIndex(name string) int { return slices.Index(groupFields, name) }

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

type ruleKind int

const (
	kindCount ruleKind = iota
	kindDistinct
	kindRatio
)

func (r *Rule) kind() ruleKind {
	switch {
	case r.Ratio != nil:
		return kindRatio
	case r.Distinct != "":
		return kindDistinct
	default:
		return kindCount
	}
}

// Bucket returns the event-time bucket size of the rule's window.
func (r *Rule) Bucket() time.Duration { return r.bucket }

// Schedule describes the rule's schedule ("every 30s" or "cron */1 * * * *").
func (r *Rule) Schedule() string {
	if r.Cron != "" {
		return "cron " + r.Cron
	}
	return "every " + r.Every.String()
}

// Realtime reports whether the rule is also evaluated as events are counted:
// count and distinct rules are; ratio rules only on schedule.
func (r *Rule) Realtime() bool { return r.kind() != kindRatio }

func (r *Rule) minEvents() float64 {
	if r.MinEvents < 1 {
		return 1
	}
	return float64(r.MinEvents)
}

// distinctCap is how many distinct values of one group a bucket keeps: twice
// the threshold (at least 10) is enough to decide a breach exactly, since a
// group that saturates one bucket is over the threshold already.
func (r *Rule) distinctCap() int64 {
	c := int64(math.Ceil(r.Threshold)) * 2
	return min(max(c, 10), 10000)
}

// RuleError is one problem in a rule file: it names the file, the line, the
// rule and the field.
type RuleError struct {
	File  string
	Line  int
	Rule  string // `"Name"` or `#3` (1-based position) when the name is unusable
	Field string
	Msg   string
}

func (e *RuleError) Error() string {
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
type Errors []*RuleError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// RuleSet is a validated set of rules with unique names.
type RuleSet struct {
	Rules  []*Rule
	Files  []string
	byName map[string]*Rule
	types  map[string]bool // every type a rule counts; nil: not known, any may be
}

// countsType reports whether a rule of the set counts events of type typ.
func (s *RuleSet) countsType(typ string) bool {
	if s == nil {
		return false
	}
	return s.types == nil || s.types[typ]
}

// Get returns the rule called name.
func (s *RuleSet) Get(name string) (*Rule, bool) {
	if s == nil {
		return nil, false
	}
	r, ok := s.byName[name]
	return r, ok
}

// Names returns the rule names in load order.
func (s *RuleSet) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.Rules))
	for i, r := range s.Rules {
		out[i] = r.Name
	}
	return out
}

// RuleFiles lists the rule files a path names: the path itself if it is a
// file, else the *.yml and *.yaml files directly inside the directory, sorted.
func RuleFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("read rules directory: %w", err)
	}
	var files []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasSuffix(n, ".yml") || strings.HasSuffix(n, ".yaml")) && !strings.HasPrefix(n, ".") {
			files = append(files, filepath.Join(path, n))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("read rules directory %s: no *.yml files", path)
	}
	sort.Strings(files)
	return files, nil
}

// LoadRules loads and validates the rule file, or every *.yml file of the
// directory, that path names. Errors are Errors (every problem found, each
// with file, line and field) or an I/O error.
func LoadRules(path string) (*RuleSet, error) {
	files, err := RuleFiles(path)
	if err != nil {
		return nil, err
	}
	return LoadRuleFiles(files)
}

// LoadRuleFiles loads and validates the given rule files as one set: rule
// names must be unique across them.
func LoadRuleFiles(files []string) (*RuleSet, error) {
	return loadRuleSet(files, os.ReadFile)
}

// LoadRuleData loads and validates one rule file's content; name stands for
// the file in errors and in RuleSet.Files (the shipped rules, embedded in
// the binary, have no file).
func LoadRuleData(name string, data []byte) (*RuleSet, error) {
	return loadRuleSet([]string{name}, func(string) ([]byte, error) { return data, nil })
}

func loadRuleSet(files []string, read func(string) ([]byte, error)) (*RuleSet, error) {
	set := &RuleSet{Files: files, byName: map[string]*Rule{}}
	var errs Errors
	for _, f := range files {
		data, err := read(f)
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		rules, err := ParseRules(f, data)
		var fileErrs Errors
		if errors.As(err, &fileErrs) {
			errs = append(errs, fileErrs...)
		} else if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if first, dup := set.byName[r.Name]; dup {
				errs = append(errs, &RuleError{File: r.File, Line: r.Line, Rule: strconv.Quote(r.Name), Field: "name",
					Msg: fmt.Sprintf("duplicate rule name (first defined at %s:%d)", first.File, first.Line)})
				continue
			}
			set.byName[r.Name] = r
			set.Rules = append(set.Rules, r)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	set.types = map[string]bool{}
	for _, r := range set.Rules {
		for t := range r.types {
			set.types[t] = true
		}
		for t := range r.of {
			set.types[t] = true
		}
	}
	return set, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// ParseRules parses and validates one rule file's content. It returns the
// valid rules and, if anything is wrong, Errors naming file, line and field
// of each problem (names must be unique within the file).
func ParseRules(file string, data []byte) ([]*Rule, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		if m := yamlLine.FindStringSubmatch(strings.SplitN(msg, "\n", 2)[0]); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = "yaml: " + m[2]
		}
		return nil, Errors{{File: file, Line: line, Msg: msg}}
	}
	if len(doc.Content) == 0 {
		return nil, Errors{{File: file, Line: 1, Msg: `empty file (want a mapping with a "rules" list)`}}
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, Errors{{File: file, Line: root.Line, Msg: `want a mapping with a "rules" list`}}
	}
	var rulesNode *yaml.Node
	p.mapping(root, "", "", func(key string, k, v *yaml.Node) {
		switch key {
		case "rules":
			rulesNode = v
		default:
			p.errf(k.Line, "", key, `unknown field (want "rules")`)
		}
	})
	if rulesNode == nil {
		if len(p.errs) == 0 {
			p.errf(root.Line, "", "rules", "required")
		}
		return nil, p.errs
	}
	if rulesNode.Kind == yaml.ScalarNode && rulesNode.Tag == "!!null" {
		return nil, p.result()
	}
	if rulesNode.Kind != yaml.SequenceNode {
		p.errf(rulesNode.Line, "", "rules", "want a list of rules")
		return nil, p.errs
	}
	var rules []*Rule
	seen := map[string]*Rule{}
	for i, item := range rulesNode.Content {
		r, ok := p.rule(i, resolve(item))
		if !ok {
			continue
		}
		if first, dup := seen[r.Name]; dup {
			p.errf(r.Line, strconv.Quote(r.Name), "name", "duplicate rule name (first defined at %s:%d)", first.File, first.Line)
			continue
		}
		seen[r.Name] = r
		rules = append(rules, r)
	}
	if len(p.errs) > 0 {
		return rules, p.errs
	}
	return rules, nil
}

type parser struct {
	file string
	errs Errors
}

func (p *parser) result() error {
	if len(p.errs) == 0 {
		return nil
	}
	return p.errs
}

func (p *parser) errf(line int, rule, field, format string, args ...any) {
	p.errs = append(p.errs, &RuleError{File: p.file, Line: line, Rule: rule, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// mapping walks a mapping's pairs, reporting duplicate and non-string keys.
// prefix is prepended to field names in errors ("ratio.").
func (p *parser) mapping(n *yaml.Node, rule, prefix string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.errf(k.Line, rule, prefix+"?", "mapping key is not a string")
			continue
		}
		if seen[k.Value] {
			p.errf(k.Line, rule, prefix+k.Value, "set twice")
			continue
		}
		seen[k.Value] = true
		fn(k.Value, k, v)
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func (p *parser) str(n *yaml.Node, rule, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errf(n.Line, rule, field, "want a string")
		return "", false
	}
	return n.Value, true
}

func (p *parser) strList(n *yaml.Node, rule, field string) ([]string, bool) {
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, rule, field, "want a list of strings")
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	ok := true
	for _, item := range n.Content {
		item = resolve(item)
		s, good := p.str(item, rule, field)
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func (p *parser) strMap(n *yaml.Node, rule, field string) (map[string]string, map[string]int, bool) {
	if isNull(n) {
		return map[string]string{}, map[string]int{}, true
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, rule, field, "want a mapping of strings")
		return nil, nil, false
	}
	out, lines, ok := map[string]string{}, map[string]int{}, true
	p.mapping(n, rule, field+".", func(key string, k, v *yaml.Node) {
		if !labelNamePattern.MatchString(key) {
			p.errf(k.Line, rule, field+"."+key, "invalid name (want [a-zA-Z_][a-zA-Z0-9_]*)")
			ok = false
			return
		}
		s, good := p.str(v, rule, field+"."+key)
		if !good {
			ok = false
			return
		}
		out[key], lines[key] = s, v.Line
	})
	return out, lines, ok
}

func (p *parser) duration(n *yaml.Node, rule, field string) (time.Duration, bool) {
	s, ok := p.str(n, rule, field)
	if !ok {
		return 0, false
	}
	d, err := model.ParseDuration(s)
	if err != nil || d <= 0 {
		p.errf(n.Line, rule, field, "invalid duration %q (want e.g. 30s, 5m, 1h, 1d)", s)
		return 0, false
	}
	return time.Duration(d), true
}

func (p *parser) types(n *yaml.Node, rule, field string) ([]string, bool) {
	list, ok := p.strList(n, rule, field)
	if !ok {
		return nil, false
	}
	if len(list) == 0 {
		p.errf(n.Line, rule, field, "empty (want at least one Auth0 log type code)")
		return nil, false
	}
	seen := map[string]bool{}
	for i, code := range list {
		line := resolve(n.Content[i]).Line
		if _, known := auth0log.LookupType(code); !known {
			p.errf(line, rule, field, "unknown Auth0 log type %q", code)
			ok = false
		} else if seen[code] {
			p.errf(line, rule, field, "type %q listed twice", code)
			ok = false
		}
		seen[code] = true
	}
	return list, ok
}

func (p *parser) field(n *yaml.Node, rule, field string) (string, bool) {
	s, ok := p.str(n, rule, field)
	if !ok {
		return "", false
	}
	if fieldIndex(s) < 0 {
		p.errf(n.Line, rule, field, "unknown value %q (want ip, user_id, user_name, client_id or connection)", s)
		return "", false
	}
	return s, true
}

// rule decodes and validates one rule mapping; ok is false when the rule
// has an error (reported).
func (p *parser) rule(i int, n *yaml.Node) (*Rule, bool) {
	id := "#" + strconv.Itoa(i+1)
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, id, "", "want a mapping")
		return nil, false
	}
	before := len(p.errs)
	r := &Rule{File: p.file, Line: n.Line}
	// The name first, so every error names the rule.
	for j := 0; j+1 < len(n.Content); j += 2 {
		if k := resolve(n.Content[j]); k.Kind == yaml.ScalarNode && k.Value == "name" {
			v := resolve(n.Content[j+1])
			if v.Kind == yaml.ScalarNode && ruleNamePattern.MatchString(v.Value) {
				r.Name, r.Line, id = v.Value, k.Line, strconv.Quote(v.Value)
			}
		}
	}
	lines := map[string]int{}
	var labelLines, annotationLines map[string]int
	var ratioSeen bool
	p.mapping(n, id, "", func(key string, k, v *yaml.Node) {
		lines[key] = v.Line
		switch key {
		case "name":
			s, ok := p.str(v, id, key)
			switch {
			case ok && !ruleNamePattern.MatchString(s):
				p.errf(v.Line, id, key, "invalid name %q (want [A-Za-z0-9_]+)", s)
			case ok && strings.HasPrefix(s, ReservedNamePrefix):
				// Alertmanager routes Authpipe… alerts to the operations
				// receiver (deploy/alertmanager): a breach must not go there.
				p.errf(v.Line, id, key, "reserved name %q: names starting with %q are authpipe's own health alerts", s, ReservedNamePrefix)
			}
		case "types":
			r.Types, _ = p.types(v, id, key)
		case "group_by":
			if !isNull(v) {
				r.GroupBy, _ = p.field(v, id, key)
			}
		case "distinct":
			if !isNull(v) {
				r.Distinct, _ = p.field(v, id, key)
			}
		case "ratio":
			ratioSeen = true
			if v.Kind != yaml.MappingNode {
				p.errf(v.Line, id, key, "want a mapping with key \"of\"")
				return
			}
			ratio := &Ratio{}
			var ofSeen bool
			p.mapping(v, id, "ratio.", func(rk string, kk, vv *yaml.Node) {
				switch rk {
				case "of":
					ofSeen = true
					ratio.Of, _ = p.types(vv, id, "ratio.of")
				default:
					p.errf(kk.Line, id, "ratio."+rk, `unknown field (want "of")`)
				}
			})
			if !ofSeen {
				p.errf(v.Line, id, "ratio.of", "required")
			}
			r.Ratio = ratio
		case "min_events":
			var m int64
			if v.Kind != yaml.ScalarNode || v.Decode(&m) != nil || m < 0 {
				p.errf(v.Line, id, key, "want a whole number of at least 0")
				return
			}
			r.MinEvents = m
		case "window":
			d, ok := p.duration(v, id, key)
			if ok && (d < MinWindow || d > MaxWindow) {
				p.errf(v.Line, id, key, "%s out of range (want %s to %s)", d, MinWindow, "7d")
				return
			}
			r.Window = d
		case "threshold":
			var f float64
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!float") || v.Decode(&f) != nil {
				p.errf(v.Line, id, key, "want a number")
				return
			}
			if !(f > 0) || math.IsInf(f, 0) {
				p.errf(v.Line, id, key, "want a number greater than 0, got %s", v.Value)
				return
			}
			r.Threshold = f
		case "every":
			d, ok := p.duration(v, id, key)
			if ok && d < MinEvery {
				p.errf(v.Line, id, key, "%s too short (want at least %s)", d, MinEvery)
				return
			}
			r.Every = d
		case "cron":
			s, ok := p.str(v, id, key)
			if !ok {
				return
			}
			if err := gocron.NewDefaultCron(false).IsValid(s, time.UTC, time.Now()); err != nil {
				p.errf(v.Line, id, key, "invalid cron expression %q (want 5 fields, e.g. \"*/5 * * * *\")", s)
				return
			}
			r.Cron = s
		case "severity":
			s, ok := p.str(v, id, key)
			if ok && !slices.Contains(severities, s) {
				p.errf(v.Line, id, key, "unknown severity %q (want critical, warning or info)", s)
				return
			}
			r.Severity = s
		case "labels":
			r.Labels, labelLines, _ = p.strMap(v, id, key)
		case "annotations":
			r.Annotations, annotationLines, _ = p.strMap(v, id, key)
		default:
			p.errf(k.Line, id, key, "unknown field")
		}
	})

	// Cross-field rules.
	need := func(field string, set bool) {
		if !set && lines[field] == 0 {
			p.errf(n.Line, id, field, "required")
		}
	}
	need("name", r.Name != "")
	need("types", r.Types != nil)
	need("window", r.Window != 0)
	need("threshold", r.Threshold != 0)
	if r.GroupBy != "" && r.Distinct == r.GroupBy {
		p.errf(lines["distinct"], id, "distinct", "same field as group_by (want another field)")
	}
	if ratioSeen && r.Distinct != "" {
		p.errf(lines["distinct"], id, "distinct", "cannot be combined with ratio")
	}
	if _, set := lines["min_events"]; set && !ratioSeen {
		p.errf(lines["min_events"], id, "min_events", "only applies to ratio rules (set ratio.of)")
	}
	if lines["every"] != 0 && lines["cron"] != 0 {
		p.errf(lines["cron"], id, "cron", "set every or cron, not both")
	}
	if r.Every == 0 && r.Cron == "" && lines["every"] == 0 && lines["cron"] == 0 {
		r.Every = DefaultEvery
	}
	if r.Severity == "" && lines["severity"] == 0 {
		r.Severity = DefaultSeverity
	}
	for _, l := range reservedLabels {
		if _, set := r.Labels[l]; set {
			p.errf(labelLines[l], id, "labels."+l, "reserved: authpipe sets it")
		}
	}
	if r.GroupBy != "" {
		if _, set := r.Labels[r.GroupBy]; set {
			p.errf(labelLines[r.GroupBy], id, "labels."+r.GroupBy, "reserved: the group value of group_by %s", r.GroupBy)
		}
	}
	for _, a := range reservedAnnotations {
		if _, set := r.Annotations[a]; set {
			p.errf(annotationLines[a], id, "annotations."+a, "reserved: authpipe sets it")
		}
	}
	if len(p.errs) > before {
		return nil, false
	}
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	if r.Annotations == nil {
		r.Annotations = map[string]string{}
	}
	r.annotations = map[string]*template.Template{}
	for _, key := range sortedKeys(r.Annotations) {
		t, err := parseAnnotation(r, key, r.Annotations[key])
		if err != nil {
			p.errf(annotationLines[key], id, "annotations."+key, "%v", err)
			continue
		}
		r.annotations[key] = t
	}
	if len(p.errs) > before {
		return nil, false
	}
	r.finish()
	return r, true
}

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
	sorted := func(s []string) string { c := slices.Clone(s); sort.Strings(c); return strings.Join(c, ",") }
	fmt.Fprintf(h, "types=%s\ngroup=%s\ndistinct=%s\nwindow=%d\nbucket=%d\n", sorted(r.Types), r.GroupBy, r.Distinct, r.Window, r.bucket)
	if r.Ratio != nil {
		fmt.Fprintf(h, "of=%s\n", sorted(r.Ratio.Of))
	}
	r.countFP = hex.EncodeToString(h.Sum(nil))[:8]
	fmt.Fprintf(h, "severity=%s\n", r.Severity)
	for _, k := range sortedKeys(r.Labels) {
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

// AnnotationData is what annotation templates see: {{ .Value }},
// {{ .Group }}, …
type AnnotationData struct {
	Rule, Tenant, Severity string
	GroupBy, Group         string // Group is "" for a rule without group_by
	Value, Threshold       string
	Window                 string
	Labels                 map[string]string
}

// maxAnnotation bounds an annotation template.
const maxAnnotation = 4096

// templateFuncs are the template functions annotations may call: the
// side-effect-free, bounded builtins (no printf widths, no call, no range).
var templateFuncs = map[string]bool{"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true,
	"le": true, "gt": true, "ge": true, "len": true, "index": true, "print": true, "html": true, "js": true, "urlquery": true}

// checkTemplate allows fields, if, with and the functions above: an
// annotation renders in bounded time and size.
func checkTemplate(n parse.Node) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkTemplate(c); err != nil {
				return err
			}
		}
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		return checkTemplate(n.Pipe)
	case *parse.IfNode:
		return errors.Join(checkTemplate(n.Pipe), checkTemplate(n.List), checkTemplate(n.ElseList))
	case *parse.WithNode:
		return errors.Join(checkTemplate(n.Pipe), checkTemplate(n.List), checkTemplate(n.ElseList))
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := checkTemplate(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if err := checkTemplate(a); err != nil {
				return err
			}
		}
	case *parse.IdentifierNode:
		if !templateFuncs[n.Ident] {
			return fmt.Errorf("function %s is not supported", n.Ident)
		}
	case *parse.ChainNode:
		return checkTemplate(n.Node)
	case *parse.FieldNode, *parse.VariableNode, *parse.DotNode, *parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode:
	case *parse.RangeNode:
		return errors.New("range is not supported")
	case *parse.TemplateNode:
		return errors.New("template is not supported")
	default:
		return fmt.Errorf("%T is not supported", n)
	}
	return nil
}

var badField = regexp.MustCompile(`can't evaluate field (\w+) in type`)

func parseAnnotation(r *Rule, key, text string) (*template.Template, error) {
	if len(text) > maxAnnotation {
		return nil, fmt.Errorf("too long (%d bytes, at most %d)", len(text), maxAnnotation)
	}
	t, err := template.New(key).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("invalid template: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("invalid template: define and block are not supported")
	}
	if err := checkTemplate(t.Tree.Root); err != nil {
		return nil, fmt.Errorf("invalid template: %w", err)
	}
	var buf bytes.Buffer
	sample := AnnotationData{Rule: r.Name, Tenant: "tenant", Severity: r.Severity, GroupBy: r.GroupBy, Group: "group",
		Value: "1", Threshold: "1", Window: "5m", Labels: r.Labels}
	if err := t.Execute(&buf, sample); err != nil {
		if m := badField.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("invalid template: no field .%s (want .Rule, .Tenant, .Severity, .GroupBy, .Group, .Value, .Threshold, .Window or .Labels)", m[1])
		}
		return nil, fmt.Errorf("invalid template: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatDuration prints a duration the way rule files write it (5m, 1h30m, 1d).
func formatDuration(d time.Duration) string { return model.Duration(d).String() }

// formatValue prints a value: whole numbers without decimals, fractions
// with at most 4.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(math.Round(v*10000)/10000, 'f', -1, 64)
}
