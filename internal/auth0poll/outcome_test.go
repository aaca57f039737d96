package auth0poll

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
)

func TestEventsByOutcomeAndRetention(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	p, reg := h.newPoller(func(c *Config) { c.Retention = 48 * time.Hour })

	want := func(success, failure, info int) string {
		return strings.NewReplacer("TENANT", h.tenant,
			"SUCCESS", strconv.Itoa(success), "FAILURE", strconv.Itoa(failure), "INFO", strconv.Itoa(info)).Replace(`
# HELP authpipe_auth0_events_by_outcome_total Auth0 log events committed to the buffer, by the outcome of their type (success, failure, info; unknown types count as info).
# TYPE authpipe_auth0_events_by_outcome_total counter
authpipe_auth0_events_by_outcome_total{outcome="failure",tenant="TENANT"} FAILURE
authpipe_auth0_events_by_outcome_total{outcome="info",tenant="TENANT"} INFO
authpipe_auth0_events_by_outcome_total{outcome="success",tenant="TENANT"} SUCCESS
# HELP authpipe_auth0_log_retention_seconds How long Auth0 keeps logs (AUTH0_LOG_RETENTION): the checkpoint lag must stay well below it.
# TYPE authpipe_auth0_log_retention_seconds gauge
authpipe_auth0_log_retention_seconds{tenant="TENANT"} 172800
`)
	}
	names := []string{"authpipe_auth0_events_by_outcome_total", "authpipe_auth0_log_retention_seconds"}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want(0, 0, 0)), names...),
		"every outcome exists at zero before the first poll")

	start := h.clock.Now().Add(-time.Hour)
	var events []sim.Event
	add := func(typ string, n int) {
		for range n {
			events = append(events, sim.Event{Type: typ, UserName: "u@example.com", IP: "192.0.2.1",
				Date: start.Add(time.Duration(len(events)) * time.Second)})
		}
	}
	add("s", 7)             // success
	add("seacft", 2)        // success
	add("fp", 5)            // failure
	add("f", 1)             // failure
	add("fu", 3)            // failure
	add("sapi", 1)          // success
	add("acls_summary", 2)  // info
	add("zz_not_a_type", 4) // unknown: info
	ids := h.auth0.Add(events...)

	h.run(p)
	h.drive("poll", func() bool { return polled(p) >= float64(len(ids)) })
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want(10, 9, 6)), names...))
	require.Equal(t, polled(p), 10.0+9+6, "the outcomes add up to the events polled")
}
