package config

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/yamlx"
)

// Tenant is one Auth0 tenant authpipe polls: its name (the metric label
// `tenant`, the hash tag of its Redis keys, the prefix of its Segment
// messageIds), its Auth0 settings and the Segment write key its events go to.
type Tenant struct {
	Name     string
	Auth0    Auth0
	WriteKey Secret
}

// AllTenants lists the tenants to poll: the file's tenants list when it has
// one, else the single tenant of the top-level settings (AUTHPIPE_TENANT,
// auth0.*, SEGMENT_WRITE_KEY).
func (c *Config) AllTenants() []Tenant {
	if len(c.Tenants) > 0 {
		return slices.Clone(c.Tenants)
	}
	return []Tenant{{Name: c.Tenant, Auth0: c.Auth0, WriteKey: c.Segment.WriteKey}}
}

// ForTenant returns a copy of c as if t were its only tenant: Tenant, Auth0
// and Segment.WriteKey are t's, everything else is shared. Components built
// from it need to know nothing about several tenants.
func (c *Config) ForTenant(t Tenant) *Config {
	tc := *c
	tc.Tenants = nil
	tc.Tenant, tc.Auth0, tc.Segment.WriteKey = t.Name, t.Auth0, t.WriteKey
	return &tc
}

// keyTenants is the top-level YAML key of the tenants list.
const keyTenants = "tenants"

// topLevelOnly are the settings a tenants list replaces: each tenant names
// itself and brings its own Auth0 application. Setting them as well is an
// error rather than silently ignored.
var topLevelOnly = map[string]bool{
	"AUTHPIPE_TENANT":     true,
	"AUTH0_DOMAIN":        true,
	"AUTH0_CLIENT_ID":     true,
	"AUTH0_CLIENT_SECRET": true,
	"AUTH0_STREAM_TOKEN":  true, // each stream has its own token
}

// perTenant reports whether a tenant of the list may set s: every Auth0
// setting (the ones it leaves unset are the top-level values) and the
// Segment write key. Every auth0.* setting must store into Config.Auth0.
func perTenant(s setting) bool {
	return strings.HasPrefix(s.key, "auth0.") || s.key == "segment.write_key"
}

// TenantEnv returns the environment variable that sets a secret of the
// tenant named name: base + "_" + the name upper-cased with "-" as "_"
// (AUTH0_CLIENT_SECRET_ACME_EU for acme-eu). Its _FILE form is read too.
func TenantEnv(base, name string) string {
	return base + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// rawTenant is one item of the file's tenants list as written.
type rawTenant struct {
	line     int // the item's first line
	name     string
	nameLine int
	values   map[string]rawValue // setting key ("auth0.domain") → value
	order    []string            // keys in file order
}

type rawValue struct {
	value string
	line  int
}

// tenantList reads the file's tenants list. Values are applied later, by
// buildTenants, over the top-level settings as the environment left them.
func (l *loader) tenantList(path string, k, v *yaml.Node) {
	switch {
	case v == nil || yamlx.IsNull(v):
		return
	case v.Kind != yaml.SequenceNode:
		l.problems = append(l.problems, fmt.Sprintf("%s:%d: tenants must be a list of tenants (name, auth0, segment), found %s", path, k.Line, yamlx.KindName(v)))
		l.tenantsFile, l.badTenants = path, true
		return
	}
	l.tenantsFile = path
	for i, item := range v.Content {
		label := fmt.Sprintf("tenants[%d]", i)
		item = yamlx.Resolve(item)
		if item == nil || item.Kind != yaml.MappingNode {
			line, found := k.Line, "nothing"
			if item != nil {
				line, found = item.Line, yamlx.KindName(item)
			}
			l.problems = append(l.problems, fmt.Sprintf("%s:%d: %s must be a mapping with name, auth0 and segment, found %s", path, line, label, found))
			l.badTenants = true
			continue
		}
		rt := rawTenant{line: item.Line, values: map[string]rawValue{}}
		l.tenantItem(path, label, item, "", &rt)
		l.tenants = append(l.tenants, rt)
	}
}

// tenantItem reads one tenant mapping (prefix "") or one of its sections
// (prefix "auth0." or "segment.").
func (l *loader) tenantItem(path, label string, n *yaml.Node, prefix string, rt *rawTenant) {
	scope := label + strings.TrimSuffix("."+prefix, ".")
	yamlx.Pairs(n, func(k, v *yaml.Node, first int) {
		if k.Kind != yaml.ScalarNode {
			l.tenantProblem(fmt.Sprintf("%s:%d: a key must be a plain name, found %s", path, k.Line, yamlx.KindName(k)))
			return
		}
		if k.Tag == "!!merge" {
			l.tenantProblem(fmt.Sprintf("%s:%d: merge keys (<<) are not supported: write the settings out", path, k.Line))
			return
		}
		if first > 0 {
			l.tenantProblem(fmt.Sprintf("%s:%d: %s.%s is set twice (first at line %d)", path, k.Line, label, prefix+k.Value, first))
			return
		}
		key := prefix + k.Value
		s, isSetting := l.byKey[key]
		switch {
		case prefix == "" && (k.Value == "auth0" || k.Value == "segment"):
			switch {
			case v == nil || yamlx.IsNull(v):
			case v.Kind != yaml.MappingNode:
				l.tenantProblem(fmt.Sprintf("%s:%d: %s.%s must be a mapping of settings, found %s", path, k.Line, label, k.Value, yamlx.KindName(v)))
			default:
				l.tenantItem(path, label, v, k.Value+".", rt)
			}
		case prefix == "" && k.Value == "name":
			switch {
			case v == nil || yamlx.IsNull(v):
			case v.Kind != yaml.ScalarNode:
				l.tenantProblem(fmt.Sprintf("%s:%d: %s.name: expected a single value, found %s", path, k.Line, label, yamlx.KindName(v)))
			default:
				rt.name, rt.nameLine = strings.TrimSpace(v.Value), k.Line
			}
		case isSetting && perTenant(s):
			switch {
			case v == nil || yamlx.IsNull(v):
			case v.Kind != yaml.ScalarNode:
				l.tenantProblem(fmt.Sprintf("%s:%d: %s.%s: expected a single value, found %s", path, k.Line, label, key, yamlx.KindName(v)))
			default:
				if val := clean(s, v.Value); val != "" {
					rt.values[key] = rawValue{value: val, line: k.Line}
					rt.order = append(rt.order, key)
				}
			}
		case isSetting:
			l.tenantProblem(fmt.Sprintf("%s:%d: %s is shared by all tenants: set it at the top level, not in %s", path, k.Line, key, label))
		default:
			msg := fmt.Sprintf("%s:%d: field %q not found in %s", path, k.Line, k.Value, scope)
			if hint := l.suggestTenantKey(prefix, k.Value); hint != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", hint)
			}
			l.tenantProblem(msg)
		}
	})
}

func (l *loader) tenantProblem(p string) {
	l.problems = append(l.problems, p)
	l.badTenants = true
}

// suggestTenantKey returns the key of a tenant (or of its section) that is
// closest to key, or "".
func (l *loader) suggestTenantKey(prefix, key string) string {
	candidates := []string{"name", "auth0", "segment"}
	if prefix != "" {
		candidates = nil
		for _, s := range l.all {
			if rest, ok := strings.CutPrefix(s.key, prefix); ok && perTenant(s) {
				candidates = append(candidates, rest)
			}
		}
	}
	return yamlx.Closest(key, candidates)
}

// tenantsListed reports whether the file lists tenants.
func (l *loader) tenantsListed() bool { return len(l.tenants) > 0 || l.badTenants }

// checkTopLevelOnly reports top-level settings that a tenants list replaces
// but that were set anyway.
func (l *loader) checkTopLevelOnly(s setting) (problem string, skip bool) {
	if !l.tenantsListed() {
		return "", false
	}
	if topLevelOnly[s.env] {
		if where, set := l.origin[s.env]; set && !l.badTenants {
			return fmt.Sprintf("%s: not used when %s lists tenants: set %s[].%s for each tenant instead",
				where, l.tenantsFile, keyTenants, tenantKeyOf(s)), true
		}
		return "", true
	}
	if s.env == "SEGMENT_WRITE_KEY" && s.empty(l.cfg) {
		return "", true // each tenant may bring its own; checked per tenant
	}
	return "", false
}

// tenantKeyOf names a top-level-only setting inside a tenant.
func tenantKeyOf(s setting) string {
	if s.env == "AUTHPIPE_TENANT" {
		return "name"
	}
	return s.key
}

// buildTenants applies each listed tenant over the top-level settings (as
// the file and the environment left them), reads its secrets from the
// environment, and checks it. A tenant's own value wins over the top-level
// one, wherever that came from.
func (l *loader) buildTenants(getenv func(string) (string, bool), readFile func(string) ([]byte, error)) {
	if !l.tenantsListed() {
		return
	}
	path := l.tenantsFile
	names := map[string]string{} // name → label of the tenant that has it
	envNames := map[string]string{}
	var out []Tenant
	for i, rt := range l.tenants {
		label := fmt.Sprintf("%s[%d]", keyTenants, i)
		itemWhere := fmt.Sprintf("%s:%d: %s", path, rt.line, label)
		base := *l.cfg
		base.Auth0.Domain, base.Auth0.ClientID, base.Auth0.ClientSecret = "", "", ""
		base.Auth0.StreamToken = ""
		tc := &base
		origin := map[string]string{}
		bad := map[string]bool{}

		nameOK := false
		switch {
		case rt.name == "":
			l.problems = append(l.problems, itemWhere+".name is required")
		default:
			nameWhere := fmt.Sprintf("%s:%d: %s.name", path, rt.nameLine, label)
			if msg := checkTenantName(rt.name); msg != "" {
				l.problems = append(l.problems, nameWhere+": "+msg)
			} else if other, dup := names[rt.name]; dup {
				l.problems = append(l.problems, fmt.Sprintf("%s: %q is also the name of %s", nameWhere, rt.name, other))
			} else if other, dup := envNames[TenantEnv("", rt.name)]; dup {
				l.problems = append(l.problems, fmt.Sprintf("%s: %q and %s's name give the same secret variables (%s): rename one",
					nameWhere, rt.name, other, TenantEnv("AUTH0_CLIENT_SECRET", rt.name)))
			} else {
				nameOK = true
				names[rt.name] = label
				envNames[TenantEnv("", rt.name)] = label
			}
		}

		for _, key := range rt.order {
			s, rv := l.byKey[key], rt.values[key]
			where := fmt.Sprintf("%s:%d: %s.%s", path, rv.line, label, key)
			if msg := s.set(tc, rv.value); msg != "" {
				l.problems = append(l.problems, s.describe(msg, where))
				bad[key] = true
				continue
			}
			origin[key] = where
		}
		// Secrets from the environment, per tenant.
		for _, s := range l.all {
			if !perTenant(s) || !s.secret || !nameOK {
				continue
			}
			v, where, problem := l.secretFromEnv(getenv, readFile, TenantEnv(s.env, rt.name))
			switch {
			case problem != "":
				l.problems = append(l.problems, problem)
				bad[s.key] = true
			case v != "":
				if msg := s.set(tc, v); msg != "" {
					l.problems = append(l.problems, s.describe(msg, where))
					bad[s.key] = true
					continue
				}
				origin[s.key] = where
			}
		}
		for _, s := range l.all {
			if !perTenant(s) || bad[s.key] {
				continue
			}
			where, own := origin[s.key]
			if !own && !(s.required && s.empty(tc)) {
				continue // the top-level value, checked there
			}
			msg := s.validate(tc)
			if msg == "" {
				continue
			}
			if !own {
				where = itemWhere + "." + s.key
				if msg == msgRequired && s.secret && nameOK {
					hint := TenantEnv(s.env, rt.name)
					where += fmt.Sprintf(" is required (in the file, or %s or %s_FILE", hint, hint)
					if s.key == "segment.write_key" {
						where += ", or SEGMENT_WRITE_KEY for every tenant"
					}
					l.problems = append(l.problems, where+")")
					continue
				}
			}
			l.problems = append(l.problems, s.describe(msg, where))
		}
		out = append(out, Tenant{Name: rt.name, Auth0: tc.Auth0, WriteKey: tc.Segment.WriteKey})
	}
	l.cfg.Tenants = out
}

// secretFromEnv reads one secret variable or its _FILE form (a top-level
// setting's, or a tenant's: TenantEnv).
func (l *loader) secretFromEnv(getenv func(string) (string, bool), readFile func(string) ([]byte, error), name string) (v, where, problem string) {
	s := setting{secret: true}
	v = clean(s, lookup(getenv, name))
	fileVar := name + "_FILE"
	path := strings.TrimSpace(lookup(getenv, fileVar))
	if path == "" {
		return v, name, ""
	}
	if v != "" {
		return "", "", fmt.Sprintf("%s and %s are both set; set only one", name, fileVar)
	}
	data, err := readFile(path)
	if err != nil {
		return "", "", fileVar + ": " + oneLine(err.Error())
	}
	if v = clean(s, string(data)); v == "" {
		return "", "", fmt.Sprintf("%s: %s is empty", fileVar, path)
	}
	return v, name + " (read from " + fileVar + ")", ""
}

// checkTenantName is checkTenant, plus names whose secret variables would
// clash with the top-level ones' _FILE forms.
func checkTenantName(v string) string {
	if msg := checkTenant(v); msg != "" {
		return msg
	}
	if TenantEnv("", v) == "_FILE" {
		return fmt.Sprintf("%q is reserved: its secret variables would be AUTH0_CLIENT_SECRET_FILE and SEGMENT_WRITE_KEY_FILE", v)
	}
	return ""
}

// validateTenants checks a hand-built Config's Tenants as Load would.
func (c *Config) validateTenants() []string {
	var problems []string
	names := map[string]bool{}
	envNames := map[string]bool{}
	for i, t := range c.Tenants {
		label := fmt.Sprintf("%s[%d]", keyTenants, i)
		if t.Name == "" {
			problems = append(problems, label+".name is required")
		} else if msg := checkTenantName(t.Name); msg != "" {
			problems = append(problems, label+".name: "+msg)
		} else if names[t.Name] || envNames[TenantEnv("", t.Name)] {
			problems = append(problems, fmt.Sprintf("%s.name: %q is not unique (names must differ also with - read as _ and in upper case)", label, t.Name))
		}
		names[t.Name], envNames[TenantEnv("", t.Name)] = true, true
		tc := c.ForTenant(t)
		for _, s := range settings() {
			if !perTenant(s) {
				continue
			}
			if msg := s.validate(tc); msg != "" {
				problems = append(problems, s.describe(msg, label+"."+s.key))
			}
		}
	}
	return problems
}
