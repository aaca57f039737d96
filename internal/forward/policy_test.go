package forward

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
)

// Detectors independent of the scrubber's own patterns.
var (
	testEmailRE = regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)
	testIPv4RE  = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b`)
	testIPv6RE  = regexp.MustCompile(`(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?`)
)

// addresses returns the e-mail and IP addresses in s.
func addresses(s string) []string {
	found := testEmailRE.FindAllString(s, -1)
	found = append(found, testIPv4RE.FindAllString(s, -1)...)
	for _, c := range testIPv6RE.FindAllString(s, -1) {
		if _, err := netip.ParseAddr(c); err == nil {
			found = append(found, c)
		}
	}
	return found
}

// TestForwardPIINeverLeavesInClear sends simulator traffic, plus events that
// carry addresses everywhere Auth0 puts them, through the real buffer to the
// Segment simulator under the default policy: no e-mail or IP address of
// the simulator arrives in clear, and the same person maps to one value.
func TestForwardPIINeverLeavesInClear(t *testing.T) {
	fx := newFixture(t)
	rng := rand.New(rand.NewPCG(5, 5))
	events := sim.GenerateEvents(rng, 300, time.Now().Add(-time.Hour), time.Second)
	events[0].UserName, events[0].IP = piiEmail, piiIP
	const mallory = "Mallory.Doe@Example.org"
	events = append(events,
		sim.Event{
			Type: "fu", UserName: mallory, IP: "2001:db8:85a3::8a2e:370:7334", UserAgent: "curl/8.5.0",
			ClientID: "cid", ClientName: "Storefront Web", Connection: "Username-Password-Authentication",
			Description: "Wrong email or password for mallory.doe@example.org.",
			Details: map[string]any{
				"request": map[string]any{
					"ip":      "198.51.100.250",
					"headers": map[string]any{"x-forwarded-for": "198.51.100.250, 2001:db8::99", "user-agent": "curl/8.5.0"},
				},
				"body":  map[string]any{"email": "mallory.doe@example.org", "username": mallory},
				"error": map[string]any{"message": "blocked 203.0.113.200 (::ffff:203.0.113.201) for mallory.doe@example.org"},
			},
			Extra: map[string]any{"location_info": map[string]any{
				"country_code": "NL", "country_name": "Netherlands", "continent_code": "EU",
				"city_name": "Amsterdam", "latitude": 52.37, "longitude": 4.89, "time_zone": "Europe/Amsterdam",
			}},
		},
		sim.Event{Type: "limit_wc", IP: "::1", Description: "Too many attempts from 192.0.2.1", Details: map[string]any{"ips": []any{"192.0.2.1", "192.0.2.2"}}},
	)
	logs := fx.add(events...)

	// What the simulator sent: every address in the raw logs.
	inClear := map[string]bool{}
	for _, l := range logs {
		for _, a := range addresses(string(l.Raw)) {
			inClear[a], inClear[strings.ToLower(a)] = true, true
		}
	}
	require.Contains(t, inClear, piiEmail)
	require.Contains(t, inClear, piiIP)
	require.Contains(t, inClear, "2001:db8:85a3::8a2e:370:7334")
	require.Greater(t, len(inClear), 100, "the simulator's traffic carries many addresses")

	r := fx.start(fx.config())
	fx.waitCount(len(logs))
	fx.waitDrained()
	require.NoError(t, r.stop(t))
	fx.requireDelivered(logs)

	var last map[string]any
	for _, raw := range fx.seg.Messages() {
		msg := string(raw)
		require.Empty(t, addresses(msg), "an address in clear: %s", msg)
		for a := range inClear {
			require.NotContains(t, strings.ToLower(msg), strings.ToLower(a))
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		if m["messageId"] == MessageID(fx.tenant, logs[len(logs)-2].ID) {
			last = m
		}
	}

	// The crafted event: one person, one value, in every field; location
	// coarsened; the anonymousId keyed on the attempted user name.
	require.NotNil(t, last)
	h := HashPII(testKey, "mallory.doe@example.org")
	props := last["properties"].(map[string]any)
	details := props["details"].(map[string]any)
	require.Equal(t, h, props["user_name"])
	require.Equal(t, h, details["body"].(map[string]any)["email"])
	require.Equal(t, h, details["body"].(map[string]any)["username"])
	require.Equal(t, "Wrong email or password for "+h+".", props["description"])
	require.Equal(t, HashPII(testKey, "2001:db8:85a3::8a2e:370:7334"), props["ip"])
	require.Equal(t, HashPII(testKey, "198.51.100.250"), details["request"].(map[string]any)["ip"])
	require.Equal(t, map[string]any{"country_code": "NL", "country_name": "Netherlands", "continent_code": "EU"}, props["location_info"])
	require.Equal(t, AnonymousID(testKey, fx.tenant, "user_name", mallory), last["anonymousId"])
	require.NotContains(t, last, "context")
	fx.requireNoPII()
}

// TestForwardFilter checks that filtered types are acknowledged without
// being sent, counted by reason, and still seen by another consumer group
// (the threshold checks').
func TestForwardFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter Filter
		want   func(code string) string // the expected reason, "" when sent
	}{
		{
			name:   "exclude",
			filter: Filter{Exclude: []string{"fsa", "slo"}},
			want: func(code string) string {
				if code == "fsa" || code == "slo" {
					return FilterExclude
				}
				return ""
			},
		},
		{
			name:   "include, and exclude wins",
			filter: Filter{Include: []string{"s", "fp", "fu"}, Exclude: []string{"fu"}},
			want: func(code string) string {
				switch code {
				case "fu":
					return FilterExclude
				case "s", "fp":
					return ""
				}
				return FilterInclude
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			const otherGroup = "thresholds"
			require.NoError(t, fx.buf.EnsureGroup(fx.ctx, otherGroup))
			logs := fx.generate(200)
			var sent []auth0log.Log
			filtered := map[string]float64{}
			for _, l := range logs {
				if reason := tc.want(l.Type); reason != "" {
					filtered[reason]++
				} else {
					sent = append(sent, l)
				}
			}
			require.NotEmpty(t, sent)
			require.Greater(t, len(sent), 0)
			require.Less(t, len(sent), len(logs), "the traffic holds filtered types")

			cfg := fx.config()
			cfg.Filter = tc.filter
			r := fx.start(cfg)
			fx.waitCount(len(sent))
			fx.waitDrained()
			require.NoError(t, r.stop(t))
			fx.requireDelivered(sent)
			require.Empty(t, fx.deadLetters())

			tenant := fx.tenant
			for _, reason := range filterReasons {
				require.Equal(t, filtered[reason], metricValue(t, r.reg, "authpipe_forward_events_filtered_total",
					map[string]string{"tenant": tenant, "reason": reason}), reason)
			}
			require.Equal(t, float64(len(sent)), metricValue(t, r.reg, "authpipe_forward_events_acked_total", map[string]string{"tenant": tenant}))
			stage := map[string]string{"stage": metrics.StageForward, "tenant": tenant}
			require.Equal(t, float64(len(logs)), metricValue(t, r.reg, "authpipe_stage_events_received_total", stage))
			require.Equal(t, float64(len(sent)), metricValue(t, r.reg, "authpipe_stage_events_written_total", stage))
			require.Equal(t, float64(len(logs)), metricValue(t, r.reg, "authpipe_stage_events_acked_total", stage),
				"filtered events count as acked in the forward stage")

			// Another consumer group still reads every event.
			entries, err := fx.buf.Read(fx.ctx, otherGroup, "t1", 1000, 100*time.Millisecond)
			require.NoError(t, err)
			require.Len(t, entries, len(logs))
		})
	}
}

func TestFilterDrop(t *testing.T) {
	tests := []struct {
		name   string
		filter Filter
		code   string
		reason string
		drop   bool
	}{
		{"no filter forwards all", Filter{}, "fsa", "", false},
		{"excluded", Filter{Exclude: []string{"fsa"}}, "fsa", FilterExclude, true},
		{"not excluded", Filter{Exclude: []string{"fsa"}}, "s", "", false},
		{"included", Filter{Include: []string{"s"}}, "s", "", false},
		{"not included", Filter{Include: []string{"s"}}, "f", FilterInclude, true},
		{"unknown type not included", Filter{Include: []string{"s"}}, "zz_new", FilterInclude, true},
		{"exclude wins", Filter{Include: []string{"s"}, Exclude: []string{"s"}}, "s", FilterExclude, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reason, drop := tc.filter.Drop(tc.code)
			require.Equal(t, tc.drop, drop)
			require.Equal(t, tc.reason, reason)
		})
	}
	require.NoError(t, Filter{Include: []string{"s", "f"}, Exclude: []string{"fsa"}}.validate())
	require.EqualError(t, Filter{Exclude: []string{"fsa", "nope"}}.validate(), `filter exclude: "nope" is not an Auth0 log type code`)
}
