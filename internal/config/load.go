package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/yamlx"
)

// maxFileSize bounds the config file and every secret file.
const maxFileSize = 1 << 20

// loader collects the configuration and every problem found on the way.
type loader struct {
	cfg         *Config
	all         []setting
	byKey       map[string]setting
	sections    map[string]bool     // top-level keys that hold a mapping of settings
	origin      map[string]string   // env name → where the value came from, for messages
	bad         map[string]bool     // env names already reported: not validated again
	problems    []string            // the file's problems, in line order
	envProblems map[string][]string // env name → problems found in the environment

	tenants     []rawTenant // the file's tenants list (see tenants.go)
	tenantsFile string      // the file that lists them
	badTenants  bool        // the list had items that could not be read
}

func load(getenv func(string) (string, bool), readFile func(string) ([]byte, error)) (*Config, error) {
	c := Default()
	l := &loader{
		cfg:         &c,
		all:         settings(),
		byKey:       map[string]setting{},
		sections:    map[string]bool{},
		origin:      map[string]string{},
		bad:         map[string]bool{},
		envProblems: map[string][]string{},
	}
	for _, s := range l.all {
		l.byKey[s.key] = s
		if section, _, nested := strings.Cut(s.key, "."); nested {
			l.sections[section] = true
		}
	}

	if path := strings.TrimSpace(lookup(getenv, EnvConfig)); path != "" {
		c.File = path
		data, err := readFile(path)
		if err != nil {
			return nil, &Error{Problems: []string{EnvConfig + ": " + oneLine(err.Error())}}
		}
		if fatal := l.file(path, data); fatal {
			return nil, &Error{Problems: l.problems}
		}
	}
	l.env(getenv, readFile)
	// The file's problems come first, in line order; then each setting's, in
	// table order.
	for _, s := range l.all {
		if p := l.envProblems[s.env]; len(p) > 0 {
			l.problems = append(l.problems, p...)
			continue
		}
		if l.bad[s.env] {
			continue // already reported; a second message would only repeat it
		}
		if p, skip := l.checkTopLevelOnly(s); skip {
			if p != "" {
				l.problems = append(l.problems, p)
			}
			continue
		}
		if msg := s.validate(l.cfg); msg != "" {
			where := cmp.Or(l.origin[s.env], s.env) // a file location, else the env name
			l.problems = append(l.problems, s.describe(msg, where))
		}
	}
	l.buildTenants(getenv, readFile)
	l.problems = append(l.problems, c.streamProblems()...) // across settings and tenants
	if len(l.problems) > 0 {
		return nil, &Error{Problems: l.problems}
	}
	return &c, nil
}

// lookup returns the value of an environment variable, "" when unset.
func lookup(getenv func(string) (string, bool), name string) string {
	v, _ := getenv(name) // "" when unset
	return v
}

// clean trims a value: surrounding white space, or for a secret only
// trailing line breaks (a secret may legitimately contain spaces).
func clean(s setting, v string) string {
	if s.secret {
		return strings.TrimRight(v, "\r\n")
	}
	return strings.TrimSpace(v)
}

// report records a problem of setting s found in the file.
func (l *loader) report(s setting, problem string) {
	l.bad[s.env] = true
	l.problems = append(l.problems, problem)
}

// reportEnv records a problem of setting s found in the environment.
func (l *loader) reportEnv(s setting, problem string) {
	l.bad[s.env] = true
	l.envProblems[s.env] = append(l.envProblems[s.env], problem)
}

// apply parses v into the configuration; where names the source in
// messages. It returns the problem, or "".
func (l *loader) apply(s setting, v, where string) string {
	if msg := s.set(l.cfg, v); msg != "" {
		return s.describe(msg, where)
	}
	l.origin[s.env] = where
	return ""
}

// env applies the environment over the file's values.
func (l *loader) env(getenv func(string) (string, bool), readFile func(string) ([]byte, error)) {
	for _, s := range l.all {
		v, where := clean(s, lookup(getenv, s.env)), s.env
		if s.secret {
			var problem string
			if v, where, problem = l.secretFromEnv(getenv, readFile, s.env); problem != "" {
				l.reportEnv(s, problem)
				continue
			}
		}
		if v == "" {
			continue
		}
		if p := l.apply(s, v, where); p != "" {
			l.reportEnv(s, p)
		}
	}
}

// file applies a YAML config file. It reports true when the file could not
// be read as a whole, so that checking the rest would only add noise.
func (l *loader) file(path string, data []byte) (fatal bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return false // empty or only comments
		}
		l.problems = append(l.problems, yamlSyntax(path, err))
		return true
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			l.problems = append(l.problems, yamlSyntax(path, err))
			return true
		}
		if n := yamlx.DocumentRoot(&next); n != nil && !yamlx.IsNull(n) {
			l.problems = append(l.problems, fmt.Sprintf("%s:%d: a second YAML document is not allowed: one file holds one configuration", path, n.Line))
			return true
		}
	}
	root := yamlx.DocumentRoot(&doc)
	if root == nil || yamlx.IsNull(root) {
		return false
	}
	if root.Kind != yaml.MappingNode {
		l.problems = append(l.problems, fmt.Sprintf("%s:%d: the top level must be a mapping of settings, found %s", path, root.Line, yamlx.KindName(root)))
		return true
	}
	l.mapping(path, root, "")
	return false
}

// mapping applies one mapping: the top level (prefix "") or a section
// (prefix "auth0." …).
func (l *loader) mapping(path string, n *yaml.Node, prefix string) {
	yamlx.Pairs(n, func(k, v *yaml.Node, first int) {
		if k.Kind != yaml.ScalarNode {
			l.problems = append(l.problems, fmt.Sprintf("%s:%d: a key must be a plain name, found %s", path, k.Line, yamlx.KindName(k)))
			return
		}
		if k.Tag == "!!merge" {
			l.problems = append(l.problems, fmt.Sprintf("%s:%d: merge keys (<<) are not supported: write the settings out", path, k.Line))
			return
		}
		name := prefix + k.Value
		s, isSetting := l.byKey[name]
		if first > 0 {
			label := name
			if isSetting {
				label = fmt.Sprintf("%s (%s)", s.key, s.env)
				l.bad[s.env] = true
			}
			l.problems = append(l.problems, fmt.Sprintf("%s:%d: %s is set twice (first at line %d)", path, k.Line, label, first))
			return
		}

		switch {
		case isSetting:
			l.leaf(path, s, k, v)
		case prefix == "" && k.Value == keyTenants:
			l.tenantList(path, k, v)
		case prefix == "" && l.sections[k.Value]:
			switch {
			case v == nil || yamlx.IsNull(v):
			case v.Kind != yaml.MappingNode:
				l.problems = append(l.problems, fmt.Sprintf("%s:%d: %s must be a mapping of settings, found %s", path, k.Line, name, yamlx.KindName(v)))
			default:
				l.mapping(path, v, name+".")
			}
		default:
			scope := "at the top level"
			if prefix != "" {
				scope = "in " + strings.TrimSuffix(prefix, ".")
			}
			msg := fmt.Sprintf("%s:%d: field %q not found %s", path, k.Line, k.Value, scope)
			if hint := l.suggest(prefix, k.Value); hint != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", hint)
			}
			l.problems = append(l.problems, msg)
		}
	})
}

// leaf applies one setting's value from the file.
func (l *loader) leaf(path string, s setting, k, v *yaml.Node) {
	where := fmt.Sprintf("%s:%d: %s (%s)", path, k.Line, s.key, s.env)
	switch {
	case v == nil || yamlx.IsNull(v):
		return // "key:" with no value leaves the default
	case v.Kind == yaml.SequenceNode && s.list:
		var items []string
		for _, item := range v.Content {
			if item = yamlx.Resolve(item); item == nil || item.Kind != yaml.ScalarNode {
				l.report(s, where+": expected a list of single values")
				return
			}
			items = append(items, item.Value)
		}
		v = &yaml.Node{Kind: yaml.ScalarNode, Value: strings.Join(items, ",")}
	case v.Kind != yaml.ScalarNode:
		l.report(s, where+": expected a single value, found "+yamlx.KindName(v))
		return
	}
	if val := clean(s, v.Value); val != "" {
		if p := l.apply(s, val, where); p != "" {
			l.report(s, p)
		}
	}
}

// suggest returns the key the author probably meant, or "": the YAML key of
// an environment variable name, a near miss within the same mapping, or the
// same name in another section.
func (l *loader) suggest(prefix, key string) string {
	for _, s := range l.all {
		if strings.EqualFold(key, s.env) {
			return s.key
		}
	}
	var candidates []string
	for _, s := range l.all {
		if rest, ok := strings.CutPrefix(s.key, prefix); ok && !strings.Contains(rest, ".") {
			candidates = append(candidates, rest)
		}
	}
	if prefix == "" {
		for section := range l.sections {
			candidates = append(candidates, section)
		}
	}
	if best := yamlx.Closest(key, candidates); best != "" {
		return best
	}
	for _, s := range l.all {
		if s.key != prefix+key && strings.HasSuffix(s.key, "."+key) || !strings.Contains(s.key, ".") && s.key == key {
			return s.key
		}
	}
	return ""
}

// yamlSyntax turns yaml.v3's "yaml: line 3: …" into "path:3: …".
func yamlSyntax(path string, err error) string {
	line, msg := yamlx.SyntaxError(err)
	if line > 0 {
		return path + ":" + strconv.Itoa(line) + ": " + msg
	}
	return path + ": " + msg
}

// oneLine keeps a message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// readFileLimited reads a config or secret file of at most maxFileSize bytes.
func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than 1 MiB", path)
	}
	return data, nil
}
