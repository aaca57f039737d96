package forward

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// PIIAction is what happens to one kind of personal data before a message
// leaves for Segment.
type PIIAction string

// PII actions. The zero value means PIIHash.
const (
	PIIKeep PIIAction = "keep" // sent as Auth0 logged it
	PIIHash PIIAction = "hash" // replaced by a keyed hash of the value (scrubber.hash)
	PIIDrop PIIAction = "drop" // removed
)

// PIIPolicy says, per kind of personal data, what leaves for Segment. Zero
// fields mean PIIHash. user_id is never changed: it is the Segment userId,
// and Segment's deletion requests work by userId.
//
//   - UserName: every field named user_name or username, at any depth. When
//     its value is an e-mail address, Email applies too and the stricter of
//     the two wins (drop > hash > keep): Auth0's user_name is the e-mail
//     address for most database connections.
//   - Email: every e-mail address anywhere in the event: whole values, parts
//     of longer texts (description, error messages), map keys, and every
//     field named email or email_address.
//   - IP: the top-level ip (context.ip only when kept; otherwise the hashed
//     value is properties.ip), every field named like an IP address (ip,
//     ip_address, client_ip, remote_ip, x-forwarded-for, x-real-ip, …) at
//     any depth, and every IPv4 or IPv6 address inside any other text. The
//     location Auth0 derived from the IP (location_info) follows it: kept
//     with keep, coarsened to country and continent with hash, removed with
//     drop.
//   - UserAgent: the top-level user_agent (context.userAgent only when kept;
//     otherwise properties.user_agent) and every field named user_agent or
//     user-agent at any depth.
//
// Within a longer text, hash replaces each address by its hash and drop by
// "[email]" or "[ip]"; a field whose whole value is the data is replaced by
// the hash, or removed.
type PIIPolicy struct {
	UserName  PIIAction
	Email     PIIAction
	IP        PIIAction
	UserAgent PIIAction
}

func (p PIIPolicy) withDefaults() PIIPolicy {
	for _, a := range []*PIIAction{&p.UserName, &p.Email, &p.IP, &p.UserAgent} {
		*a = cmp.Or(*a, PIIHash)
	}
	return p
}

// validate reports the first field with an unknown action.
func (p PIIPolicy) validate() error {
	p = p.withDefaults()
	for _, f := range []struct {
		name string
		a    PIIAction
	}{{"user_name", p.UserName}, {"email", p.Email}, {"ip", p.IP}, {"user_agent", p.UserAgent}} {
		switch f.a {
		case PIIKeep, PIIHash, PIIDrop:
		default:
			return fmt.Errorf("pii policy for %s %q: want keep, hash or drop", f.name, string(f.a))
		}
	}
	return nil
}

// strictness orders actions: keep < hash < drop.
func strictness(a PIIAction) int {
	switch a {
	case PIIKeep:
		return 0
	case PIIDrop:
		return 2
	default:
		return 1
	}
}

func stricter(a, b PIIAction) PIIAction {
	if strictness(b) > strictness(a) {
		return b
	}
	return a
}

// hashPrefix marks hashed personal data.
const hashPrefix = "h:"

// piiKeyLabel derives the PII hashing key from the hash key, so that PII
// hashes and anonymousIds never share an HMAC input space.
const piiKeyLabel = "authpipe pii key v1"

// piiKey derives the key of PII hashes from the configured hash key.
func piiKey(hashKey []byte) []byte {
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(piiKeyLabel))
	return mac.Sum(nil)
}

// normalizePII gives one spelling per person for e-mail and IP addresses.
func normalizePII(v string) string {
	if ip, ok := parseAddr(v); ok {
		return ip.Unmap().WithZone("").String()
	}
	if isEmail(v) {
		return strings.ToLower(v)
	}
	return v
}

// emailRE matches what looks like an e-mail address: a local part of the
// characters RFC 5322 allows unquoted, "@", and a domain of at least two
// dot-separated labels (letters of any script, digits, hyphens).
var emailRE = regexp.MustCompile("[\\pL\\pN.!#$%&'*+/=?^_`{|}~-]+@[\\pL\\pN-]+(?:\\.[\\pL\\pN-]+)+")

// ipv4RE matches dotted quads. It errs on the side of privacy: any four
// groups of one to three digits count, wherever they stand.
var ipv4RE = regexp.MustCompile(`[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}`)

// ipRunRE matches the runs of characters an IPv6 address is written with.
var ipRunRE = regexp.MustCompile(`[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*`)

func isEmail(s string) bool {
	if strings.IndexByte(s, '@') < 0 {
		return false // emailRE needs an "@"; skipping it saves a regexp run per string
	}
	loc := emailRE.FindStringIndex(s)
	return loc != nil && loc[0] == 0 && loc[1] == len(s)
}

// hasDottedQuad reports whether ipv4RE matches somewhere in s: four runs of
// one to three digits joined by dots (the first and last may be the ends of
// longer runs, as an unanchored match may start or end inside one).
func hasDottedQuad(s string) bool {
	for p := 1; p < len(s); p++ {
		if s[p] != '.' || !isDigit(s[p-1]) {
			continue
		}
		q, ok := p+1, true
		for range 2 { // the two middle runs: whole, 1-3 digits, then a dot
			n := 0
			for q < len(s) && isDigit(s[q]) {
				q++
				n++
			}
			if n < 1 || n > 3 || q >= len(s) || s[q] != '.' {
				ok = false
				break
			}
			q++
		}
		if ok && q < len(s) && isDigit(s[q]) {
			return true
		}
	}
	return false
}

// parseAddr is netip.ParseAddr for text that can be an address: before
// its zone ("%eth0"), an IP address has only hex digits, dots and colons,
// and at least one dot or colon. Other text — most strings of an event —
// is refused without calling ParseAddr, which allocates its error.
func parseAddr(s string) (netip.Addr, bool) {
	sep := false
scan:
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.' || c == ':':
			sep = true
		case c == '%':
			break scan
		case isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F':
		default:
			return netip.Addr{}, false
		}
	}
	if !sep {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(s)
	return ip, err == nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// maxIPv6Text is the longest textual IPv6 address (with an IPv4 suffix).
const maxIPv6Text = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")

// maxIPv6Search bounds the runs searched for an IPv6 address inside them;
// a longer run with "::" or 6 colons counts as one.
const maxIPv6Search = 256

// holdsIPv6 reports whether run (hex digits, colons, dots) is or contains
// an IPv6 address.
func holdsIPv6(run string) bool {
	if ip, err := netip.ParseAddr(run); err == nil && ip.Is6() {
		return true
	}
	// Without "::", an IPv6 address has at least 6 colons.
	if !strings.Contains(run, "::") && strings.Count(run, ":") < 6 {
		return false
	}
	if len(run) > maxIPv6Search {
		return true // no analytics value in it; searching would cost more
	}
	for i := 0; i < len(run); i++ {
		for j := min(len(run), i+maxIPv6Text); j >= i+2; j-- {
			if ip, err := netip.ParseAddr(run[i:j]); err == nil && ip.Is6() {
				return true
			}
		}
	}
	return false
}

// hash is the value that replaces a piece of personal data under the hash
// policy: "h:" + the first 32 hex digits of HMAC-SHA256(k, value), where
// k = HMAC-SHA256(hashKey, "authpipe pii key v1"). The value is normalised
// first: an e-mail address is lower-cased, an IP address is written in its
// canonical form (an IPv4-mapped IPv6 address as IPv4). So the same person
// maps to the same value in every field, every event and every tenant of a
// deployment, and nobody without the key can map a guessed address to it.
// The pool spares keying a new HMAC per value.
func (s scrubber) hash(value string) string {
	return s.macs.hexSum(hashPrefix, normalizePII(value))
}

// scrubber applies a PIIPolicy to the fields of one message.
type scrubber struct {
	policy PIIPolicy
	macs   macPool // keyed with piiKey(hashKey)
}

func newScrubber(hashKey []byte, policy PIIPolicy) scrubber {
	return scrubber{policy: policy.withDefaults(), macs: newMACPool(piiKey(hashKey))}
}

// macPool holds HMAC-SHA256 instances keyed with one key, with room for
// their input and sum: hashing a value neither keys an HMAC nor allocates
// anything but the result.
type macPool struct{ p *sync.Pool }

type keyedMAC struct {
	mac hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

func newMACPool(key []byte) macPool {
	return macPool{&sync.Pool{New: func() any { return &keyedMAC{mac: hmac.New(sha256.New, key)} }}}
}

// hexSum is prefix + the first 32 hex digits of the HMAC of parts joined
// by NUL bytes. prefix is at most 8 bytes.
func (p macPool) hexSum(prefix string, parts ...string) string {
	k := p.p.Get().(*keyedMAC)
	k.mac.Reset()
	k.in = k.in[:0]
	for i, s := range parts {
		if i > 0 {
			k.in = append(k.in, 0)
		}
		k.in = append(k.in, s...)
	}
	k.mac.Write(k.in)
	var out [40]byte
	n := copy(out[:8], prefix)
	hex.Encode(out[n:n+32], k.mac.Sum(k.sum[:0])[:16])
	p.p.Put(k)
	return string(out[:n+32])
}

// field kinds with a policy of their own, by normalised key.
type fieldKind int

const (
	freeField fieldKind = iota
	userNameField
	emailField
	ipField
	userAgentField
)

var namedFields = map[string]fieldKind{
	"username":       userNameField,
	"email":          emailField,
	"emailaddress":   emailField,
	"ip":             ipField,
	"ipaddress":      ipField,
	"clientip":       ipField,
	"remoteip":       ipField,
	"remoteaddr":     ipField,
	"remoteaddress":  ipField,
	"realip":         ipField,
	"xrealip":        ipField,
	"xforwardedfor":  ipField,
	"trueclientip":   ipField,
	"cfconnectingip": ipField,
	"useragent":      userAgentField,
}

// kindOf classifies a key: lower-cased, without "_" and "-".
func kindOf(key string) fieldKind {
	if len(key) > 32 {
		return freeField
	}
	// Byte by byte, without allocating: the names are ASCII, so a key
	// with other bytes matches none whichever way they are mapped.
	var norm [32]byte
	n := 0
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c == '_' || c == '-' {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		norm[n] = c
		n++
	}
	return namedFields[string(norm[:n])]
}

// action is the policy of a named field holding v.
func (s scrubber) action(kind fieldKind, v any) PIIAction {
	switch kind {
	case userNameField:
		if str, ok := v.(string); ok && isEmail(str) {
			return stricter(s.policy.UserName, s.policy.Email)
		}
		return s.policy.UserName
	case emailField:
		return s.policy.Email
	case ipField:
		return s.policy.IP
	case userAgentField:
		return s.policy.UserAgent
	}
	return PIIKeep
}

// object scrubs the fields of a JSON object, in place; m and the values in
// it must not be used afterwards. The maps are the forwarder's own, freshly
// decoded, and a copy per object cost a fifth of the scrubbing.
func (s scrubber) object(m map[string]any) map[string]any {
	renamed := false
	for k, v := range m {
		if nk, keep := s.text(k); !keep || nk != k {
			renamed = true
		}
		if v, ok := s.fieldValue(kindOf(k), v); ok {
			m[k] = v
		} else {
			delete(m, k)
		}
	}
	if renamed {
		return s.rekey(m)
	}
	return m
}

// rekey applies the policy to the keys of an object whose values are
// scrubbed already, into a new map. Keys are visited in sorted order, so
// that two keys that scrub to the same text resolve deterministically (the
// first wins). Only a key that holds an address changes, so object and Map
// call it only when one does (never, for Auth0's own field names).
func (s scrubber) rekey(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		nk, keepKey := s.text(k)
		if _, taken := out[nk]; keepKey && !taken {
			out[nk] = m[k]
		}
	}
	return out
}

// fieldValue scrubs the value of a field of the given kind; false: remove it.
func (s scrubber) fieldValue(kind fieldKind, v any) (any, bool) {
	if kind == freeField {
		return s.value(v)
	}
	if str, ok := v.(string); ok && kind == userNameField && isEmail(str) {
		// normalizePII of an e-mail address, without matching it again.
		switch stricter(s.policy.UserName, s.policy.Email) {
		case PIIDrop:
			return nil, false
		case PIIHash:
			return s.macs.hexSum(hashPrefix, strings.ToLower(str)), true
		}
		return v, true
	}
	switch s.action(kind, v) {
	case PIIDrop:
		return nil, false
	case PIIHash:
		return s.hashAll(v), true
	default:
		return v, true // kept verbatim, as the policy says
	}
}

// hashAll replaces every string and number inside v by its hash.
func (s scrubber) hashAll(v any) any {
	switch x := v.(type) {
	case string:
		return s.hash(x)
	case json.Number:
		return s.hash(x.String())
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range slices.Sorted(maps.Keys(x)) {
			nk, keepKey := s.text(k) // keys are scanned like any key
			if _, taken := out[nk]; keepKey && !taken {
				out[nk] = s.hashAll(x[k])
			}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.hashAll(e)
		}
		return out
	}
	return v
}

// value scrubs a free value; false: remove it.
func (s scrubber) value(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		return s.text(x)
	case map[string]any:
		return s.object(x), true
	case []any:
		out := x[:0] // in place, as object
		for _, e := range x {
			if e, ok := s.value(e); ok {
				out = append(out, e)
			}
		}
		clear(x[len(out):])
		return out, true
	}
	return v, true
}

// text applies the Email and IP policies to the addresses inside a free
// text. It reports false when the whole text is one address to drop.
//
// Replacements repeat until no address is left: a replacement can join
// what is left of its neighbours into a new match ("p@q.ra@b.cc" leaves
// "h:…@b.cc"). Every round removes an "@", or more colons and dots than it
// adds, so the loop ends.
func (s scrubber) text(t string) (string, bool) {
	if s.policy.Email != PIIKeep && isEmail(t) {
		return s.whole(s.policy.Email, t)
	}
	if s.policy.IP != PIIKeep {
		if _, ok := parseAddr(t); ok {
			return s.whole(s.policy.IP, t)
		}
	}
	for {
		changed := false
		if s.policy.Email != PIIKeep && strings.IndexByte(t, '@') >= 0 {
			t = s.replace(emailRE, t, s.policy.Email, "[email]", nil, &changed)
		}
		if s.policy.IP != PIIKeep && strings.ContainsAny(t, ".:") {
			// Each regexp runs only where it can match: ipRunRE needs two
			// colons, ipv4RE a dotted quad.
			if strings.Count(t, ":") >= 2 {
				t = s.replace(ipRunRE, t, s.policy.IP, "[ip]", ipv6Core, &changed)
			}
			if hasDottedQuad(t) {
				t = s.replace(ipv4RE, t, s.policy.IP, "[ip]", nil, &changed)
			}
		}
		if !changed {
			return t, true
		}
	}
}

// whole applies an action to a text that is one address.
func (s scrubber) whole(a PIIAction, t string) (string, bool) {
	if a == PIIDrop {
		return "", false
	}
	return s.hash(t), true
}

// replace applies an action to every match of re in t, setting *changed
// when it replaced any. core (if not nil) narrows a match to the part to
// replace, or returns ok false to leave it.
func (s scrubber) replace(re *regexp.Regexp, t string, a PIIAction, marker string,
	core func(string) (start, end int, ok bool), changed *bool) string {
	return re.ReplaceAllStringFunc(t, func(m string) string {
		start, end := 0, len(m)
		if core != nil {
			var ok bool
			if start, end, ok = core(m); !ok {
				return m
			}
		}
		*changed = true
		if a == PIIDrop {
			return m[:start] + marker + m[end:]
		}
		return m[:start] + s.hash(m[start:end]) + m[end:]
	})
}

// ipv6Core narrows a run of hex digits, colons and dots to the part that
// holds an IPv6 address: the run without leading and trailing dots (the end
// of a sentence), if that is or contains one.
func ipv6Core(run string) (start, end int, ok bool) {
	start, end = 0, len(run)
	for start < end && run[start] == '.' {
		start++
	}
	for end > start && run[end-1] == '.' {
		end--
	}
	return start, end, holdsIPv6(run[start:end])
}

// coarseLocation keeps the country- and continent-level fields of Auth0's
// location_info (dropping city, subdivision, coordinates and time zone).
var coarseLocation = []string{"country_code", "country_code3", "country_name", "continent_code"}

// location applies the IP policy to Auth0's location_info; false: remove it.
func (s scrubber) location(v any) (any, bool) {
	switch s.policy.IP {
	case PIIKeep:
		return v, true
	case PIIDrop:
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	out := map[string]any{}
	for _, k := range coarseLocation {
		if x, ok := m[k]; ok {
			out[k] = x
		}
	}
	return out, true
}

// label scrubs a text that must stay non-empty (the code of an unknown log
// type, which becomes the event name): a whole address to drop becomes its
// marker.
func (s scrubber) label(t string) string {
	out, ok := s.text(t)
	if ok {
		return out
	}
	if isEmail(t) {
		return "[email]"
	}
	return "[ip]"
}
