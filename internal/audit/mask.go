package audit

import (
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Masked replaces a path or query segment that may be a secret.
const Masked = "<masked>"

// MaskLength is the length from which a path or query segment is masked:
// the static token `openssl rand -hex 32` makes is 64 characters, Auth0
// client secrets and Segment write keys are 32 or more.
const MaskLength = 32

// deadLetterID is a dead-letter (stream entry) id: never a secret.
var deadLetterID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// Masker keeps secrets out of what the trail and the log record of a
// request: any path or query segment of MaskLength characters or more, and
// any text equal to (or, for secrets of 8 characters or more, containing) a
// configured secret, becomes Masked. Names known not to be secrets (tenant
// names, dead-letter ids) are kept.
type Masker struct {
	secrets []string // longest first
	known   map[string]bool
}

// NewMasker returns a Masker for the configured secrets; known lists names
// that may be long but are not secrets (the tenant names).
func NewMasker(secrets, known []string) *Masker {
	m := &Masker{known: map[string]bool{}}
	for _, s := range secrets {
		if s != "" {
			m.secrets = append(m.secrets, s)
		}
	}
	sort.Slice(m.secrets, func(i, j int) bool { return len(m.secrets[i]) > len(m.secrets[j]) })
	for _, k := range known {
		m.known[k] = true
	}
	return m
}

// Value masks one segment or value.
func (m *Masker) Value(s string) string {
	if m == nil {
		return maskLong(s, nil)
	}
	for _, sec := range m.secrets {
		if s == sec || (len(sec) >= 8 && strings.Contains(s, sec)) {
			return Masked
		}
	}
	return maskLong(s, m.known)
}

func maskLong(s string, known map[string]bool) string {
	if len(s) < MaskLength || known[s] || deadLetterID.MatchString(s) {
		return s
	}
	return Masked
}

// Path masks each segment of a request path.
func (m *Masker) Path(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = m.Value(s)
	}
	return strings.Join(segs, "/")
}

// Query returns a raw query string's parameters, keys and values masked.
// A part that does not parse is kept (masked) under the key "".
func (m *Masker) Query(raw string) map[string][]string {
	out := map[string][]string{}
	for _, part := range strings.FieldsFunc(raw, func(r rune) bool { return r == '&' }) {
		k, v, _ := strings.Cut(part, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			out[""] = append(out[""], m.Value(part))
			continue
		}
		mk := m.Value(dk)
		out[mk] = append(out[mk], m.Value(dv))
	}
	return out
}

// Values masks flag values (a command line's "query").
func (m *Masker) Values(v map[string][]string) map[string][]string {
	out := make(map[string][]string, len(v))
	for k, vs := range v {
		mv := make([]string, len(vs))
		for i, s := range vs {
			mv[i] = m.Value(s)
		}
		out[m.Value(k)] = mv
	}
	return out
}

// RedactURL is a URL as a log line or an error may show it: its user
// information (user:password@) is replaced by "<credentials>@", its query
// dropped. A value that does not parse is replaced whole.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable URL>"
	}
	creds := u.User != nil
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	out := u.String()
	if creds {
		out = strings.Replace(out, "//", "//<credentials>@", 1)
	}
	return out
}
