package forward

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/segmentio/analytics-go/v3"
	"github.com/stretchr/testify/require"
)

var (
	keepAll = PIIPolicy{UserName: PIIKeep, Email: PIIKeep, IP: PIIKeep, UserAgent: PIIKeep}
	dropAll = PIIPolicy{UserName: PIIDrop, Email: PIIDrop, IP: PIIDrop, UserAgent: PIIDrop}
)

func TestHashPII(t *testing.T) {
	h := HashPII(testKey, "alice@example.com")
	require.Regexp(t, `^h:[0-9a-f]{32}$`, h)
	require.Equal(t, h, HashPII(testKey, "alice@example.com"), "stable")
	require.Equal(t, h, HashPII(testKey, "Alice@Example.COM"), "e-mail addresses are case-insensitive")
	require.NotEqual(t, h, HashPII([]byte("another key 0123456789"), "alice@example.com"), "keyed")
	require.NotEqual(t, h, HashPII(testKey, "bob@example.com"))
	require.Equal(t, HashPII(testKey, "1.2.3.4"), HashPII(testKey, "::ffff:1.2.3.4"), "IPv4-mapped IPv6 is the IPv4 address")
	require.Equal(t, HashPII(testKey, "2001:db8::1"), HashPII(testKey, "2001:DB8:0::1"), "canonical IPv6")
	require.NotEqual(t, HashPII(testKey, "Chrome"), HashPII(testKey, "chrome"), "other values are hashed as they are")
	// Not the anonymousId of the same value.
	require.NotEqual(t, strings.TrimPrefix(h, "h:"), strings.TrimPrefix(AnonymousID(testKey, "acme", "user_name", "alice@example.com"), "anon-"))
}

func TestScrubText(t *testing.T) {
	hash := newScrubber(testKey, PIIPolicy{})
	drop := newScrubber(testKey, dropAll)
	h := func(v string) string { return HashPII(testKey, v) }
	tests := []struct {
		name     string
		in       string
		hashed   string
		dropped  string
		wholeOut bool // the whole text is an address: dropped means removed
	}{
		{name: "plain text", in: "Wrong email or password.", hashed: "Wrong email or password.", dropped: "Wrong email or password."},
		{name: "whole e-mail", in: "Bob@Example.com", hashed: h("bob@example.com"), wholeOut: true},
		{name: "whole IPv4", in: "203.0.113.7", hashed: h("203.0.113.7"), wholeOut: true},
		{name: "whole IPv6 with zone", in: "fe80::1%eth0", hashed: h("fe80::1"), wholeOut: true},
		{
			name:    "addresses in a sentence",
			in:      "user bob@example.com blocked from 203.0.113.7 and 2001:db8::7.",
			hashed:  "user " + h("bob@example.com") + " blocked from " + h("203.0.113.7") + " and " + h("2001:db8::7") + ".",
			dropped: "user [email] blocked from [ip] and [ip].",
		},
		{name: "ip and port", in: "203.0.113.7:8443", hashed: h("203.0.113.7") + ":8443", dropped: "[ip]:8443"},
		{name: "forwarded list", in: "198.51.100.1, ::ffff:203.0.113.9", hashed: h("198.51.100.1") + ", " + h("203.0.113.9"), dropped: "[ip], [ip]"},
		{name: "version numbers stay", in: "Chrome 120.0.0 / Mac OS X 10.15.7", hashed: "Chrome 120.0.0 / Mac OS X 10.15.7", dropped: "Chrome 120.0.0 / Mac OS X 10.15.7"},
		{name: "times stay", in: "2025-01-02T03:04:05.123Z", hashed: "2025-01-02T03:04:05.123Z", dropped: "2025-01-02T03:04:05.123Z"},
		{name: "MAC addresses stay", in: "aa:bb:cc:dd:ee:ff", hashed: "aa:bb:cc:dd:ee:ff", dropped: "aa:bb:cc:dd:ee:ff"},
		{name: "IPv6 inside a longer run", in: "id=x1::2:zz", hashed: "id=x" + h("1::2:") + "zz", dropped: "id=x[ip]zz"},
		{name: "mailto", in: "mailto:bob@example.com?subject=x", hashed: "mailto:" + h("bob@example.com") + "?subject=x", dropped: "mailto:[email]?subject=x"},
		{name: "not an e-mail", in: "@auth0/auth0-spa-js", hashed: "@auth0/auth0-spa-js", dropped: "@auth0/auth0-spa-js"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := hash.text(tc.in)
			require.True(t, ok)
			require.Equal(t, tc.hashed, got)
			got, ok = drop.text(tc.in)
			require.Equal(t, !tc.wholeOut, ok)
			if !tc.wholeOut {
				require.Equal(t, tc.dropped, got)
			}
		})
	}

	// Chained addresses: what a replacement leaves is scanned again.
	got, ok := hash.text("p@q.ra@b.cc")
	require.True(t, ok)
	require.NotContains(t, got, "@")
	got, _ = drop.text("1.2.3.4.5.6.7.8.9")
	require.NotRegexp(t, `\d\.\d`, got)
}

// TestMapPII maps one event under each policy and checks every field the
// policy governs.
func TestMapPII(t *testing.T) {
	h := func(v string) string { return HashPII(testKey, v) }
	event := func() map[string]any {
		return map[string]any{
			"type": "s", "user_id": "auth0|abc", "user_name": "Alice@Example.com",
			"ip": "203.0.113.7", "user_agent": "Chrome 120.0.0 / Mac OS X 10.15.7",
			"description": "Login by alice@example.com",
			"location_info": map[string]any{
				"country_code": "DE", "country_code3": "DEU", "country_name": "Germany", "continent_code": "EU",
				"city_name": "Berlin", "latitude": 52.52, "longitude": 13.4, "time_zone": "Europe/Berlin",
			},
			"details": map[string]any{
				"email": "alice@example.com",
				"request": map[string]any{
					"ip":      "2001:db8::5",
					"headers": map[string]any{"user-agent": "curl/8.5.0", "x-forwarded-for": "198.51.100.4, 203.0.113.7"},
				},
				"contacts": []any{"carol@example.org", "note"},
				"body":     map[string]any{"username": "alice"},
			},
		}
	}
	coarse := map[string]any{"country_code": "DE", "country_code3": "DEU", "country_name": "Germany", "continent_code": "EU"}
	tests := []struct {
		name   string
		policy PIIPolicy
		mutate func(map[string]any)
		check  func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any)
	}{
		{
			name:   "default: user_id kept, the rest hashed",
			policy: PIIPolicy{},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, "auth0|abc", tr.UserId)
				require.Nil(t, tr.Context, "hashed ip and user agent stay in properties")
				require.Equal(t, h("alice@example.com"), p["user_name"], "user_name is an e-mail: the same hash as the e-mail field")
				require.Equal(t, h("203.0.113.7"), p["ip"])
				require.Equal(t, h("Chrome 120.0.0 / Mac OS X 10.15.7"), p["user_agent"])
				require.Equal(t, "Login by "+h("alice@example.com"), p["description"])
				require.Equal(t, coarse, p["location_info"])
				require.Equal(t, h("alice@example.com"), d["email"])
				req := d["request"].(map[string]any)
				require.Equal(t, h("2001:db8::5"), req["ip"])
				headers := req["headers"].(map[string]any)
				require.Equal(t, h("curl/8.5.0"), headers["user-agent"])
				require.Equal(t, h("198.51.100.4, 203.0.113.7"), headers["x-forwarded-for"])
				require.Equal(t, []any{h("carol@example.org"), "note"}, d["contacts"])
				require.Equal(t, h("alice"), d["body"].(map[string]any)["username"])
			},
		},
		{
			name:   "keep everything",
			policy: keepAll,
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, "203.0.113.7", tr.Context.IP.String())
				require.Equal(t, "Chrome 120.0.0 / Mac OS X 10.15.7", tr.Context.UserAgent)
				require.NotContains(t, p, "ip")
				require.NotContains(t, p, "user_agent")
				require.Equal(t, "Alice@Example.com", p["user_name"])
				require.Equal(t, "Login by alice@example.com", p["description"])
				require.Equal(t, event()["location_info"], normalizeJSON(t, p["location_info"]))
				require.Equal(t, event()["details"], normalizeJSON(t, d))
			},
		},
		{
			name:   "drop everything",
			policy: dropAll,
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, "auth0|abc", tr.UserId)
				require.Nil(t, tr.Context)
				for _, k := range []string{"user_name", "ip", "user_agent", "location_info"} {
					require.NotContains(t, p, k)
				}
				require.Equal(t, "Login by [email]", p["description"])
				require.NotContains(t, d, "email")
				req := d["request"].(map[string]any)
				require.NotContains(t, req, "ip")
				require.Empty(t, req["headers"])
				require.Equal(t, []any{"note"}, d["contacts"])
				require.Empty(t, d["body"])
			},
		},
		{
			name:   "user_name kept, e-mail hashed: an e-mail user_name is hashed",
			policy: PIIPolicy{UserName: PIIKeep},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, h("alice@example.com"), p["user_name"])
				require.Equal(t, "alice", d["body"].(map[string]any)["username"], "not an e-mail: kept")
			},
		},
		{
			name:   "user_name and e-mail kept",
			policy: PIIPolicy{UserName: PIIKeep, Email: PIIKeep},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, "Alice@Example.com", p["user_name"])
				require.Equal(t, "alice@example.com", d["email"])
				require.Equal(t, "Login by alice@example.com", p["description"])
				require.Equal(t, h("203.0.113.7"), p["ip"])
			},
		},
		{
			name:   "user_name dropped, e-mail hashed",
			policy: PIIPolicy{UserName: PIIDrop},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.NotContains(t, p, "user_name")
				require.NotContains(t, d["body"], "username")
				require.Equal(t, h("alice@example.com"), d["email"])
			},
		},
		{
			name:   "e-mail dropped, user_name hashed: the stricter wins",
			policy: PIIPolicy{Email: PIIDrop},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.NotContains(t, p, "user_name")
				require.Equal(t, h("alice"), d["body"].(map[string]any)["username"])
				require.NotContains(t, d, "email")
				require.Equal(t, "Login by [email]", p["description"])
			},
		},
		{
			name:   "ip kept",
			policy: PIIPolicy{IP: PIIKeep},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, "203.0.113.7", tr.Context.IP.String())
				require.Empty(t, tr.Context.UserAgent)
				require.NotContains(t, p, "ip")
				require.Equal(t, event()["location_info"], normalizeJSON(t, p["location_info"]))
				req := d["request"].(map[string]any)
				require.Equal(t, "2001:db8::5", req["ip"])
				require.Equal(t, "198.51.100.4, 203.0.113.7", req["headers"].(map[string]any)["x-forwarded-for"])
			},
		},
		{
			name:   "ip dropped",
			policy: PIIPolicy{IP: PIIDrop},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.NotContains(t, p, "ip")
				require.NotContains(t, p, "location_info")
				require.NotContains(t, d["request"], "ip")
				require.Equal(t, h("alice@example.com"), p["user_name"])
			},
		},
		{
			name:   "user agent kept",
			policy: PIIPolicy{UserAgent: PIIKeep},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Nil(t, tr.Context.IP)
				require.Equal(t, "Chrome 120.0.0 / Mac OS X 10.15.7", tr.Context.UserAgent)
				require.NotContains(t, p, "user_agent")
				require.Equal(t, "curl/8.5.0", d["request"].(map[string]any)["headers"].(map[string]any)["user-agent"])
			},
		},
		{
			name:   "user agent dropped",
			policy: PIIPolicy{UserAgent: PIIDrop},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Nil(t, tr.Context)
				require.NotContains(t, p, "user_agent")
				require.NotContains(t, d["request"].(map[string]any)["headers"], "user-agent")
			},
		},
		{
			name:   "anonymousId is derived from the clear value under every policy",
			policy: dropAll,
			mutate: func(e map[string]any) { e["type"], e["user_id"] = "fu", "" },
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, AnonymousID(testKey, "acme", "user_name", "Alice@Example.com"), tr.AnonymousId)
				require.Equal(t, "", p["user_id"])
			},
		},
		{
			name:   "e-mail addresses in keys",
			policy: PIIPolicy{},
			mutate: func(e map[string]any) {
				e["details"] = map[string]any{"bob@example.com": true, "seen by 203.0.113.7": 1}
			},
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, map[string]any{h("bob@example.com"): true, "seen by " + h("203.0.113.7"): json.Number("1")}, d)
			},
		},
		{
			name:   "an unknown type code is scrubbed like any text",
			policy: PIIPolicy{},
			mutate: func(e map[string]any) { e["type"] = "eve@example.com" },
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, h("eve@example.com"), tr.Event)
				require.Equal(t, h("eve@example.com"), p["type"])
			},
		},
		{
			name:   "unparseable top-level ip is hashed as it is",
			policy: PIIPolicy{},
			mutate: func(e map[string]any) { e["ip"] = "unknown" },
			check: func(t *testing.T, tr analytics.Track, p analytics.Properties, d map[string]any) {
				require.Equal(t, h("unknown"), p["ip"])
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fields := event()
			if tc.mutate != nil {
				tc.mutate(fields)
			}
			l := decodeLog(t, fields)
			tr, err := Map("acme", l, testKey, tc.policy)
			require.NoError(t, err)
			require.NoError(t, tr.Validate())
			require.Equal(t, testLogID, tr.Properties["log_id"])
			d, _ := tr.Properties["details"].(map[string]any)
			tc.check(t, tr, tr.Properties, d)

			again, err := Map("acme", l, testKey, tc.policy)
			require.NoError(t, err)
			require.Equal(t, mustJSON(t, tr), mustJSON(t, again), "Map is deterministic")
		})
	}
}

// normalizeJSON round-trips v through JSON, so numbers compare as float64.
func normalizeJSON(t *testing.T, v any) any {
	t.Helper()
	var out any
	require.NoError(t, json.Unmarshal([]byte(mustJSON(t, v)), &out))
	return out
}

func TestPIIPolicyValidate(t *testing.T) {
	require.NoError(t, PIIPolicy{}.validate())
	require.NoError(t, keepAll.validate())
	require.NoError(t, dropAll.validate())
	require.ErrorContains(t, PIIPolicy{IP: "mask"}.validate(), `pii policy for ip "mask": want keep, hash or drop`)
	require.Equal(t, PIIPolicy{UserName: PIIHash, Email: PIIHash, IP: PIIHash, UserAgent: PIIHash}, PIIPolicy{}.withDefaults())
}

// piiMatches returns the e-mail and IP addresses the scrubber looks for in
// s (each match of its patterns, as found in s).
func piiMatches(s string) []string {
	var out []string
	out = append(out, emailRE.FindAllString(s, -1)...)
	out = append(out, ipv4RE.FindAllString(s, -1)...)
	for _, run := range ipRunRE.FindAllString(s, -1) {
		if holdsIPv6(run) {
			out = append(out, run)
		}
	}
	return out
}

// jsonStrings calls fn for every string and key in a decoded JSON value.
func jsonStrings(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case map[string]any:
		for k, e := range x {
			fn(k)
			jsonStrings(e, fn)
		}
	case []any:
		for _, e := range x {
			jsonStrings(e, fn)
		}
	}
}

// HashPII is the value that replaces a piece of personal data under the
// hash policy, computed the plain way (see scrubber.hash).
func HashPII(hashKey []byte, value string) string {
	return hashWith(piiKey(hashKey), value)
}

func hashWith(key []byte, value string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(normalizePII(value)))
	return hashPrefix + hex.EncodeToString(mac.Sum(nil))[:32]
}

// AnonymousID is the anonymousId of an event without user_id, computed the
// plain way: "anon-" + the first 32 hex digits of HMAC-SHA256(hashKey,
// tenant NUL kind NUL value).
func AnonymousID(hashKey []byte, tenant, kind, value string) string {
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(tenant))
	mac.Write([]byte{0})
	mac.Write([]byte(kind))
	mac.Write([]byte{0})
	mac.Write([]byte(value))
	return anonPrefix + hex.EncodeToString(mac.Sum(nil))[:32]
}
