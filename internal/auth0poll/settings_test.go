package auth0poll

import (
	"math"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testlogs"
)

func TestSettingsExportedAsGauges(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	names := []string{"authpipe_auth0_lag_alert_ratio", "authpipe_auth0_rate_limit_share", "authpipe_auth0_rate_limit_refill_per_second"}
	want := func(ratio, share string) string {
		return strings.NewReplacer("TENANT", h.tenant, "@RATIO@", ratio, "@SHARE@", share).Replace(`
# HELP authpipe_auth0_lag_alert_ratio Share of the log retention the checkpoint lag may reach before AuthpipeCheckpointLagHigh fires (AUTHPIPE_LAG_ALERT_RATIO).
# TYPE authpipe_auth0_lag_alert_ratio gauge
authpipe_auth0_lag_alert_ratio{tenant="TENANT"} @RATIO@
# HELP authpipe_auth0_rate_limit_refill_per_second Measured refill rate of the tenant's Auth0 logs rate-limit bucket (a lower bound), in requests per second; the poller paces itself to the share of it. 0 until the bucket has run low while polling.
# TYPE authpipe_auth0_rate_limit_refill_per_second gauge
authpipe_auth0_rate_limit_refill_per_second{tenant="TENANT"} 0
# HELP authpipe_auth0_rate_limit_share Largest share of the tenant's Auth0 logs rate limit the poller uses (AUTH0_RATE_LIMIT_SHARE); the rest is left to other Management API clients.
# TYPE authpipe_auth0_rate_limit_share gauge
authpipe_auth0_rate_limit_share{tenant="TENANT"} @SHARE@
`)
	}
	_, reg := h.newPoller(nil)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want("0.5", "0.8")), names...), "defaults")
	_, reg = h.newPoller(func(c *Config) { c.LagAlertRatio, c.RateLimitShare = 0.3, 0.6 })
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want("0.3", "0.6")), names...))
}

func TestConfigValidateShares(t *testing.T) {
	ok := Config{Tenant: "acme", Domain: "acme.eu.auth0.com", ClientID: "id", ClientSecret: "secret"}
	cases := []struct {
		name          string
		share, ratio  float64
		wantErrSubstr string
	}{
		{name: "defaults"},
		{name: "whole bucket", share: 1, ratio: 0.9},
		{name: "tiny share", share: 0.01, ratio: 0.01},
		{name: "share above 1", share: 1.2, wantErrSubstr: "rate limit share 1.2: want more than 0 and at most 1"},
		{name: "negative share", share: -0.5, wantErrSubstr: "rate limit share -0.5"},
		{name: "NaN share", share: math.NaN(), wantErrSubstr: "rate limit share NaN"},
		{name: "ratio 1", ratio: 1, wantErrSubstr: "lag alert ratio 1: want more than 0 and less than 1"},
		{name: "negative ratio", ratio: -0.1, wantErrSubstr: "lag alert ratio -0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.RateLimitShare, c.LagAlertRatio = tc.share, tc.ratio
			err := c.Validate()
			if tc.wantErrSubstr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErrSubstr)
		})
	}
}

func TestRateLimitFloor(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		share float64
		want  int64
	}{
		{10, 0.8, 2}, {10, 0.85, 2}, {10, 1, 0}, {10, 0.5, 5}, {10, 0.01, 9}, {50, 0.8, 10}, {1, 0.8, 0}, {0, 0.8, 0},
	} {
		rl := newRateLimit(tc.share, 0)
		rl.limit = tc.limit
		require.Equal(t, tc.want, rl.floor(), "limit %d share %v", tc.limit, tc.share)
	}
}

// TestConfigShowsNoSecret: the poller's config, printed or logged, shows
// the client secret as <secret>; it is revealed only to the token request.
func TestConfigShowsNoSecret(t *testing.T) {
	cfg := Config{Tenant: "acme", Domain: "acme.eu.auth0.com", ClientID: "id", ClientSecret: testSecret}
	for _, out := range testlogs.Printed(cfg) {
		require.NotContains(t, out, testSecret)
		require.Contains(t, out, "<secret>", out)
	}
}
