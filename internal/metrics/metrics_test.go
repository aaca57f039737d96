package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/metrics"
)

// Two tenants' components share a registry through their tenant
// registerers; each series carries its tenant, the application's none.
// The same component twice on one tenant's registerer is an error.
func TestTenantRegisterers(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for _, name := range []string{"acme", "globex"} {
		r := metrics.NewRegistrar(metrics.Tenant(reg, name))
		r.Counter("authpipe_test_events_total", "h").Add(float64(len(name)))
		metrics.NewStages(metrics.Tenant(reg, name)).For(metrics.StageBuffer).Written.Inc()
		require.NoError(t, r.Err())
	}
	app := metrics.NewRegistrar(reg)
	app.Gauge("authpipe_test_ready", "h").Set(1)
	require.NoError(t, app.Err())

	again := metrics.NewRegistrar(metrics.Tenant(reg, "acme"))
	again.Counter("authpipe_test_events_total", "h")
	again.CounterVec("authpipe_test_other_total", "h", "reason")
	require.ErrorContains(t, again.Err(), "duplicate metrics collector registration")

	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP authpipe_test_events_total h
# TYPE authpipe_test_events_total counter
authpipe_test_events_total{tenant="acme"} 4
authpipe_test_events_total{tenant="globex"} 6
# HELP authpipe_test_ready h
# TYPE authpipe_test_ready gauge
authpipe_test_ready 1
`), "authpipe_test_events_total", "authpipe_test_ready"))
	got, err := testutil.GatherAndCount(reg, "authpipe_stage_events_written_total")
	require.NoError(t, err)
	require.Equal(t, 2, got, "one stage series per tenant")
}
