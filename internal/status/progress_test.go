package status

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// TestProgress: a summary line per tenant every interval while work flows,
// with what moved since the line before; nothing while nothing moves.
func TestProgress(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := promauto.With(reg)
	stages := metrics.NewStages(metrics.Tenant(reg, "acme")) // as package pipeline does
	polled := f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_auth0_events_polled_total", Help: "h"}, []string{"tenant"})
	acked := f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_forward_events_acked_total", Help: "h"}, []string{"tenant"})
	backlog := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_backlog_events", Help: "h"}, []string{"tenant"})
	lag := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_auth0_checkpoint_lag_seconds", Help: "h"}, []string{"tenant"})
	fwd, buf := stages.For(metrics.StageForward), stages.For(metrics.StageBuffer)
	for _, tenant := range []string{"acme", "idle"} {
		polled.WithLabelValues(tenant)
		acked.WithLabelValues(tenant)
		backlog.WithLabelValues(tenant)
		lag.WithLabelValues(tenant).Set(4)
	}
	polled.WithLabelValues("acme").Add(1000) // before the start: not reported

	var logs testlogs.Buffer
	clock := clockwork.NewFakeClock()
	p := NewProgress(reg, slog.New(slog.NewJSONHandler(&logs, nil)), clock, time.Minute)
	ctx := context.Background()
	p.Report(ctx) // the baseline
	next := func() []map[string]any {
		t.Helper()
		n := strings.Count(logs.String(), "\n")
		clock.Advance(time.Minute)
		p.Report(ctx)
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n")[n:] {
			if line == "" {
				continue
			}
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &rec))
			out = append(out, rec)
		}
		return out
	}

	require.Empty(t, next(), "nothing moved: silent")

	polled.WithLabelValues("acme").Add(120)
	fwd.Written.Add(110)
	acked.WithLabelValues("acme").Add(100)
	buf.Failed.Add(2)
	backlog.WithLabelValues("acme").Set(18)
	lag.WithLabelValues("acme").Set(7)
	got := next()
	require.Len(t, got, 1, "one line, for the tenant that moved")
	for _, k := range []string{"time", "level"} {
		delete(got[0], k)
	}
	require.Equal(t, map[string]any{
		"msg": "progress", "component": "progress", "tenant": "acme", "interval": "1m0s",
		"polled": float64(120), "forwarded": float64(110), "acked": float64(100), "dead_lettered": float64(2),
		"backlog": float64(18), "pending": float64(0), "checkpoint_lag": "7s",
	}, got[0])

	require.Empty(t, next(), "nothing moved since: silent")
	backlog.WithLabelValues("acme").Set(0) // gauges alone are not progress
	require.Empty(t, next())

	acked.WithLabelValues("acme").Add(18)
	got = next()
	require.Len(t, got, 1)
	require.Equal(t, float64(18), got[0]["acked"])
	require.Equal(t, float64(0), got[0]["polled"])
}

// TestProgressRun: Run takes the baseline at its start and reports on its
// ticker.
func TestProgressRun(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	polled := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{Name: "authpipe_auth0_events_polled_total", Help: "h"}, []string{"tenant"})
	polled.WithLabelValues("acme").Add(5)
	var logs testlogs.Buffer
	clock := clockwork.NewFakeClock()
	p := NewProgress(reg, slog.New(slog.NewJSONHandler(&logs, nil)), clock, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
	defer bcancel()
	require.NoError(t, clock.BlockUntilContext(bctx, 1))
	polled.WithLabelValues("acme").Add(7)
	clock.Advance(DefaultProgressInterval)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"polled":7,`) }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), `"msg":"progress"`))
	cancel()
	require.NoError(t, <-done)
}
