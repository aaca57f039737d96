package rules

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/yamlx"
)

// Files lists the rule files a path names: the path itself if it is a
// file, else the *.yml and *.yaml files directly inside the directory, sorted.
func Files(path string) ([]string, error) {
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
	slices.Sort(files)
	return files, nil
}

// Load loads and validates the rule file, or every *.yml file of the
// directory, that path names. Errors are Errors (every problem found, each
// with file, line and field) or an I/O error.
func Load(path string) (*Set, error) {
	files, err := Files(path)
	if err != nil {
		return nil, err
	}
	return LoadFiles(files)
}

// LoadFiles loads and validates the given rule files as one set: rule
// names must be unique across them.
func LoadFiles(files []string) (*Set, error) {
	return load(files, os.ReadFile)
}

// LoadData loads and validates one rule file's content; name stands for
// the file in errors and in Set.Files (the shipped rules, embedded in the
// binary, have no file).
func LoadData(name string, data []byte) (*Set, error) {
	return load([]string{name}, func(string) ([]byte, error) { return data, nil })
}

func load(files []string, read func(string) ([]byte, error)) (*Set, error) {
	set := &Set{Files: files, byName: map[string]*Rule{}}
	var errs Errors
	for _, f := range files {
		data, err := read(f)
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		rules, err := Parse(f, data)
		var fileErrs Errors
		if errors.As(err, &fileErrs) {
			errs = append(errs, fileErrs...)
		} else if err != nil {
			return nil, err
		}
		for _, r := range rules {
			if first, dup := set.byName[r.Name]; dup {
				errs = append(errs, &Error{File: r.File, Line: r.Line, Rule: strconv.Quote(r.Name), Field: "name",
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
	return set, nil
}

// Parse parses and validates one rule file's content. It returns the
// valid rules and, if anything is wrong, Errors naming file, line and field
// of each problem (names must be unique within the file).
func Parse(file string, data []byte) ([]*Rule, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line, msg := yamlx.SyntaxError(err)
		return nil, Errors{{File: file, Line: line, Msg: "yaml: " + msg}}
	}
	if len(doc.Content) == 0 {
		return nil, Errors{{File: file, Line: 1, Msg: `empty file (want a mapping with a "rules" list)`}}
	}
	root := yamlx.Resolve(doc.Content[0])
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
	if yamlx.IsNull(rulesNode) {
		return nil, p.result()
	}
	if rulesNode.Kind != yaml.SequenceNode {
		p.errf(rulesNode.Line, "", "rules", "want a list of rules")
		return nil, p.errs
	}
	var rules []*Rule
	seen := map[string]*Rule{}
	for i, item := range rulesNode.Content {
		r, ok := p.rule(i, yamlx.Resolve(item))
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
	return rules, p.result()
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
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Rule: rule, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// mapping walks a mapping's pairs, reporting duplicate and non-string keys.
// prefix is prepended to field names in errors ("ratio.").
func (p *parser) mapping(n *yaml.Node, rule, prefix string, fn func(key string, k, v *yaml.Node)) {
	yamlx.Pairs(n, func(k, v *yaml.Node, first int) {
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errf(k.Line, rule, prefix+"?", "mapping key is not a string")
		case first > 0:
			p.errf(k.Line, rule, prefix+k.Value, "set twice")
		default:
			fn(k.Value, k, v)
		}
	})
}

func (p *parser) str(n *yaml.Node, rule, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || yamlx.IsNull(n) {
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
		item = yamlx.Resolve(item)
		s, good := p.str(item, rule, field)
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func (p *parser) strMap(n *yaml.Node, rule, field string) (map[string]string, map[string]int) {
	if yamlx.IsNull(n) {
		return map[string]string{}, map[string]int{}
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, rule, field, "want a mapping of strings")
		return nil, nil
	}
	out, lines := map[string]string{}, map[string]int{}
	p.mapping(n, rule, field+".", func(key string, k, v *yaml.Node) {
		if !labelNamePattern.MatchString(key) {
			p.errf(k.Line, rule, field+"."+key, "invalid name (want [a-zA-Z_][a-zA-Z0-9_]*)")
			return
		}
		if s, ok := p.str(v, rule, field+"."+key); ok {
			out[key], lines[key] = s, v.Line
		}
	})
	return out, lines
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

func (p *parser) types(n *yaml.Node, rule, field string) []string {
	list, ok := p.strList(n, rule, field)
	if !ok {
		return nil
	}
	if len(list) == 0 {
		p.errf(n.Line, rule, field, "empty (want at least one Auth0 log type code)")
		return nil
	}
	seen := map[string]bool{}
	for i, code := range list {
		line := yamlx.Resolve(n.Content[i]).Line
		if _, known := auth0log.LookupType(code); !known {
			p.errf(line, rule, field, "unknown Auth0 log type %q", code)
		} else if seen[code] {
			p.errf(line, rule, field, "type %q listed twice", code)
		}
		seen[code] = true
	}
	return list
}

func (p *parser) field(n *yaml.Node, rule, field string) string {
	s, ok := p.str(n, rule, field)
	if !ok {
		return ""
	}
	if FieldIndex(s) < 0 {
		p.errf(n.Line, rule, field, "unknown value %q (want ip, user_id, user_name, client_id or connection)", s)
		return ""
	}
	return s
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
		if k := yamlx.Resolve(n.Content[j]); k.Kind == yaml.ScalarNode && k.Value == "name" {
			v := yamlx.Resolve(n.Content[j+1])
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
			r.Types = p.types(v, id, key)
		case "group_by":
			if !yamlx.IsNull(v) {
				r.GroupBy = p.field(v, id, key)
			}
		case "distinct":
			if !yamlx.IsNull(v) {
				r.Distinct = p.field(v, id, key)
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
					ratio.Of = p.types(vv, id, "ratio.of")
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
			r.Labels, labelLines = p.strMap(v, id, key)
		case "annotations":
			r.Annotations, annotationLines = p.strMap(v, id, key)
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
	for _, key := range slices.Sorted(maps.Keys(r.Annotations)) {
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
