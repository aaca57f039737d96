package sim

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Event is one Auth0 log event to add to the simulator. Empty fields are
// filled as Auth0 would (description from the type table, strategy and
// connection_id from Connection, isMobile from UserAgent, hostname and
// tenant_name from the options).
type Event struct {
	Type, UserID, UserName, IP, UserAgent, ClientID, ClientName, Connection, Description string
	// Date is the event's date; zero means now (the simulator's clock).
	Date time.Time
	// Details is the "details" object; omitted when nil.
	Details map[string]any
	// Extra holds arbitrary further fields (tenant_name, security_context,
	// location_info, organization_id, …). A key that names a standard field
	// replaces it (use it to craft invalid events, e.g. "date": "bogus"),
	// except log_id, which the simulator owns.
	Extra map[string]any
}

// dateLayout is Auth0's date format: RFC 3339, UTC, milliseconds.
const dateLayout = "2006-01-02T15:04:05.000Z"

// encode appends an event to b as Auth0 would send it, log_id first
// (entry.id relies on that). Called with a.mu held.
func (a *Auth0) encode(b []byte, ev Event, id string, date time.Time) []byte {
	b = append(b, `{"log_id":"`...)
	b = append(b, id...)
	b = append(b, '"')

	field := func(key string, value func([]byte) []byte) {
		if _, ok := ev.Extra[key]; ok {
			return
		}
		b = append(b, ',', '"')
		b = append(b, key...)
		b = append(b, '"', ':')
		b = value(b)
	}
	str := func(key, s string) { field(key, func(b []byte) []byte { return appendString(b, s) }) }
	optStr := func(key, s string) {
		if s != "" {
			str(key, s)
		}
	}

	info, _ := auth0log.LookupType(ev.Type)
	desc := ev.Description
	if desc == "" {
		desc = info.Description
	}
	field("date", func(b []byte) []byte {
		b = append(b, '"')
		return append(date.AppendFormat(b, dateLayout), '"')
	})
	str("type", ev.Type)
	str("description", desc)
	if ev.Connection != "" {
		ci, ok := a.conns[ev.Connection]
		if !ok {
			ci.strategy, ci.strategyType = connectionStrategy(ev.Connection)
			ci.id = connectionID(ev.Connection)
			a.conns[ev.Connection] = ci
		}
		str("connection", ev.Connection)
		str("connection_id", ci.id)
		str("strategy", ci.strategy)
		str("strategy_type", ci.strategyType)
	}
	str("client_id", ev.ClientID)
	str("client_name", ev.ClientName)
	optStr("ip", ev.IP)
	if ev.UserAgent != "" {
		str("user_agent", ev.UserAgent)
		field("isMobile", func(b []byte) []byte { return strconv.AppendBool(b, isMobile(ev.UserAgent)) })
	}
	str("user_id", ev.UserID) // "" for fu, as Auth0 sends it
	optStr("user_name", ev.UserName)
	str("hostname", a.hostname)
	if ev.Details != nil {
		field("details", func(b []byte) []byte { return appendValue(b, "details", ev.Details) })
	}
	if info.Outcome == auth0log.Success && (info.Group == "login_success" || info.Group == "token_success") {
		str("audience", "https://"+a.hostname+"/userinfo")
		str("scope", "openid profile email")
	}
	str("tenant_name", a.tenant)

	for _, k := range slices.Sorted(maps.Keys(ev.Extra)) {
		if k == "log_id" {
			continue // the simulator's own
		}
		b = append(b, ',')
		b = appendString(b, k)
		b = append(b, ':')
		b = appendValue(b, k, ev.Extra[k])
	}
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			j, _ := json.Marshal(s) // strings always encode
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendValue appends v as JSON: the common shapes of event fields by hand
// (Add is on the benchmarks' hot path), anything else by encoding/json.
func appendValue(b []byte, key string, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendString(b, x)
	case bool:
		return strconv.AppendBool(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10)
	case int64:
		return strconv.AppendInt(b, x, 10)
	case map[string]any:
		b = append(b, '{')
		for i, k := range slices.Sorted(maps.Keys(x)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, key, x[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, key, e)
		}
		return append(b, ']')
	}
	j, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("sim: event field %q cannot be encoded: %v", key, err))
	}
	return append(b, j...)
}

// connInfo holds the fields Auth0 derives from a connection.
type connInfo struct{ id, strategy, strategyType string }

// connectionStrategy guesses Auth0's strategy and strategy_type from a
// connection name, as Auth0 derives them from the connection's definition.
func connectionStrategy(conn string) (strategy, strategyType string) {
	switch c := strings.ToLower(conn); {
	case c == "email" || c == "sms":
		return c, "passwordless"
	case c == "google-oauth2" || c == "github" || c == "facebook" || c == "apple" ||
		c == "windowslive" || c == "linkedin" || c == "twitter":
		return c, "social"
	case strings.Contains(c, "saml"):
		return "samlp", "enterprise"
	case strings.Contains(c, "azure") || strings.Contains(c, "waad"):
		return "waad", "enterprise"
	case strings.Contains(c, "okta"):
		return "okta", "enterprise"
	default:
		return "auth0", "database"
	}
}

// connectionID is a stable Auth0-looking connection id: "con_" + 16 chars.
func connectionID(conn string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(conn))
	return "con_" + idChars(h.Sum64(), 16)
}

const alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func idChars(x uint64, n int) string {
	b := make([]byte, n)
	for i := range b {
		x = x*6364136223846793005 + 1442695040888963407
		b[i] = alnum[(x>>33)%uint64(len(alnum))]
	}
	return string(b)
}

func isMobile(ua string) bool {
	return slices.ContainsFunc([]string{"Mobile", "Android", "iPhone", "iPad", "iOS"}, func(m string) bool { return strings.Contains(ua, m) })
}

// ---- realistic traffic ----

type weighted struct {
	code   string
	weight int
}

// trafficMix approximates a consumer tenant: mostly logins and token
// exchanges, some wrong passwords and unknown users, a few signups, logouts
// and silent-auth failures. What only an attack produces (Auth0's attack
// protection blocks limit_wc, limit_mu, limit_sul and pwd_leak, refresh-token
// reuse ferrt, MFA challenges sent in bulk) is left to the scripted attacks
// of `authpipe sim` and the demo: background traffic alone must stay under
// every shipped threshold rule (alerts/thresholds.yml).
var trafficMix = []weighted{
	{"s", 300}, {"seacft", 150}, {"sertft", 80}, {"sepft", 20}, {"seccft", 20},
	{"fp", 90}, {"fu", 40}, {"f", 15}, {"fsa", 40}, {"slo", 60}, {"ss", 25},
	{"fs", 5}, {"scp", 5}, {"sv", 10}, {"sapi", 10}, {"gd_auth_succeed", 10},
	{"gd_auth_failed", 3},
}

// MinUsers is the smallest user population of the generated traffic.
const MinUsers = 1000

// UsersFor returns the user population for generated traffic of rate
// events per second: 20 users per event a second, at least MinUsers. Each
// user signs in from an address of their own, so a user, and an IP, fails
// about twice in 5 minutes on average whatever the rate: far below every
// shipped threshold rule.
func UsersFor(rate float64) int {
	return max(MinUsers, int(math.Ceil(rate*20)))
}

var userAgents = []string{
	"Chrome 120.0.0 / Mac OS X 10.15.7",
	"Chrome 121.0.0 / Windows 10.0.0",
	"Firefox 122.0.0 / Ubuntu 0.0.0",
	"Safari 17.2.1 / Mac OS X 10.15.7",
	"Mobile Safari 17.2.0 / iOS 17.2.1",
	"Chrome Mobile 120.0.0 / Android 14.0.0",
	"Edge 120.0.0 / Windows 10.0.0",
}

var clients = []struct{ id, name string }{
	{"kJ8bW2xQ9mZt4LpR7vYc3NdE6sHfA1gU", "Storefront Web"},
	{"Qe5rT7yU2iO9pA3sD6fG8hJ1kL4zX0cV", "Storefront iOS"},
	{"Mn3bV5cX7zL9kJ2hG4fD6sA8pO1iU3yT", "Admin Console"},
}

var failureDescriptions = map[string]string{
	"fp":       "Wrong email or password.",
	"fu":       "Wrong email or password.",
	"f":        "Something went wrong, please try again later.",
	"fsa":      "Login required",
	"ferrt":    "Unsuccessful Refresh Token exchange, reused refresh token detected",
	"limit_wc": "Too many failed login attempts for this user from this IP",
	"limit_mu": "Too many failed login attempts from this IP",
	"pwd_leak": "This login has been blocked because your password has been leaked in another website",
	"fs":       "The user already exists.",
}

// GenerateEvents returns n realistic events dated start, start+spacing, …
// (GenerateTraffic over UsersFor(1s/spacing) users; MinUsers when spacing
// is 0). The same rng seed gives the same events.
func GenerateEvents(rng *rand.Rand, n int, start time.Time, spacing time.Duration) []Event {
	var rate float64
	if spacing > 0 {
		rate = float64(time.Second) / float64(spacing)
	}
	return GenerateTraffic(rng, n, start, spacing, UsersFor(rate))
}

// GenerateLogs returns GenerateEvents' events as the Auth0 simulator serves
// them (log_ids and all), decoded, in log_id order: the traffic the
// benchmarks replay. Events older than the simulator's retention are not
// returned.
func GenerateLogs(rng *rand.Rand, n int, start time.Time, spacing time.Duration) ([]auth0log.Log, error) {
	a := NewAuth0(Auth0Options{})
	a.Add(GenerateEvents(rng, n, start, spacing)...)
	logs := make([]auth0log.Log, 0, n)
	for _, id := range a.LogIDs() {
		raw, _ := a.Log(id)
		l, err := auth0log.Decode(raw)
		if err != nil {
			return nil, fmt.Errorf("decode log %s: %w", id, err)
		}
		logs = append(logs, l)
	}
	return logs, nil
}

// GenerateTraffic returns n realistic events dated start, start+spacing, …:
// a weighted mix of success logins, token exchanges, failed logins (fp, fu,
// f), silent-auth failures, signups and logouts (no attack: see
// trafficMix), by users of a population of the given size, over 3
// applications and 2 connections. Each user signs in from an address of
// their own (documentation ranges: 203.0.113.0/24 and 198.51.100.0/24 for
// the first 508 users, 2001:db8::/32 for the others), and mistypes their
// own user name when the user is unknown (fu, user_id ""). The same rng
// seed and population give the same events.
func GenerateTraffic(rng *rand.Rand, n int, start time.Time, spacing time.Duration, users int) []Event {
	total := 0
	for _, w := range trafficMix {
		total += w.weight
	}
	users = max(users, 1)
	events := make([]Event, n)
	for i := range events {
		code := pickType(rng, total)
		user := rng.IntN(users)
		c := clients[rng.IntN(len(clients))]
		conn := "Username-Password-Authentication"
		userID := fmt.Sprintf("auth0|%024x", uint64(user)*0x9E3779B97F4A7C15)
		if user%5 == 0 {
			conn = "google-oauth2"
			userID = fmt.Sprintf("google-oauth2|1%020d", uint64(user)*7919)
		}
		ev := Event{
			Type:       code,
			UserID:     userID,
			UserName:   fmt.Sprintf("user%03d@example.com", user),
			IP:         homeIP(user),
			UserAgent:  userAgents[rng.IntN(len(userAgents))],
			ClientID:   c.id,
			ClientName: c.name,
			Connection: conn,
			Date:       start.Add(time.Duration(i) * spacing),
		}
		if d, ok := failureDescriptions[code]; ok {
			ev.Description = d
			ev.Details = map[string]any{"error": map[string]any{"message": d}}
		} else {
			ev.Details = map[string]any{"session_id": idChars(rng.Uint64(), 32)}
		}
		switch code {
		case "fu":
			ev.UserID = ""
			ev.UserName = fmt.Sprintf("user%03d@exmaple.com", user) // a typo: no such user
		case "seccft", "sapi":
			ev.UserID, ev.UserName, ev.Connection, ev.UserAgent = "", "", "", ""
		}
		events[i] = ev
	}
	return events
}

// homeIP is the address user signs in from: the documentation IPv4 ranges
// while they last, then IPv6 documentation addresses.
func homeIP(user int) string {
	if user < 2*254 {
		return fmt.Sprintf("%s.%d", []string{"203.0.113", "198.51.100"}[user%2], user/2+1)
	}
	return fmt.Sprintf("2001:db8:%x:%x::1", user>>16, user&0xffff)
}

func pickType(rng *rand.Rand, total int) string {
	x := rng.IntN(total)
	for _, w := range trafficMix {
		if x < w.weight {
			return w.code
		}
		x -= w.weight
	}
	return "s"
}
