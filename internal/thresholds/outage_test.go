package thresholds

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
)

// outageClient is a client of srv that gives up quickly while it is down,
// as the run command's client does within its timeouts.
func outageClient(t *testing.T, srv *testredis.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: srv.Addr, ContextTimeoutEnabled: true, MaxRetries: 1, DialerRetries: 1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MinRetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// longWindowRule breaches with 20 failures from one IP within 30 minutes.
var longWindowRule = strings.NewReplacer("%EVERY%", "30s", "window: 5m", "window: 30m").Replace(failedLoginsRule)

// killRedis stops srv once what was written has reached its append-only
// file (appendfsync everysec), as a crash of a persistent Redis would.
func killRedis(srv *testredis.Server) {
	time.Sleep(1100 * time.Millisecond)
	srv.Kill()
}

// A breach outlives an outage of Redis longer than Alertmanager's timeout
// (four re-send intervals): the replica that led re-sends the alert from
// memory with the same startsAt, never a resolution; the breach gauge keeps
// its value while the last-check time says it is stale. After Redis is back
// the same alert (same startsAt) goes on.
func TestBreachSurvivesRedisOutage(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	am := newFakeAM(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", longWindowRule)
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: path, AlertmanagerURL: am.URL, LeaseTTL: 3 * time.Second},
		outageClient(t, srv), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)

	_, err := h.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", clock.Now()), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return am.count() > 0 }, 5*time.Second, 5*time.Millisecond, "the breach fires")
	first := am.all()[0]
	h.advance(30 * time.Second) // a scheduled check: breached, last check time set
	lastCheck := float64(clock.Now().Unix())
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.eng.m.lastCheck.WithLabelValues(rule)) == lastCheck
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, h.counter("breached", rule))

	killRedis(srv)
	down := clock.Now()
	sent := am.count()
	for clock.Since(down) < 6*time.Minute { // longer than 4 re-send intervals
		h.advance(5 * time.Second)
		require.True(t, am.all()[am.count()-1].EndsAt.After(clock.Now()), "%s into the outage: the alert must still be firing at Alertmanager", clock.Since(down))
	}
	require.Eventually(t, func() bool { return h.counter("leader") == 0 }, 5*time.Second, 5*time.Millisecond, "the lease ran out")
	require.Empty(t, am.resolutions(), "no all-clear during the outage")
	require.GreaterOrEqual(t, am.count()-sent, 5, "re-sent about once a minute from memory")
	require.Equal(t, 1.0, h.counter("breached", rule), "the breach gauge keeps its value")
	require.Equal(t, 40.0, h.counter("value", rule))
	require.Equal(t, lastCheck, testutil.ToFloat64(h.eng.m.lastCheck.WithLabelValues(rule)), "and says how old it is")
	require.Equal(t, 0.0, testutil.ToFloat64(h.eng.m.countsLive))

	require.NoError(t, srv.Restart())
	back := clock.Now()
	require.Eventually(t, func() bool {
		h.advance(time.Second)
		return h.counter("leader") == 1 && testutil.ToFloat64(h.eng.m.lastCheck.WithLabelValues(rule)) > lastCheck
	}, 20*time.Second, 10*time.Millisecond, "leads and checks again")
	h.advance(2 * time.Minute)
	require.Empty(t, am.resolutions())
	for _, a := range am.all() {
		require.Equal(t, first.Labels, a.Labels)
		require.True(t, a.StartsAt.Equal(first.StartsAt), "one alert, one start: %s", a.StartsAt)
	}
	require.Greater(t, am.all()[am.count()-1].EndsAt, back.Add(2*time.Minute), "still firing after the outage")
	require.Equal(t, 1.0, h.counter("breached", rule))
}

// After a buffer error, a breach whose window has emptied is not resolved
// until the counts are live again: an event dated after the error has been
// counted (here) or the resolve hold has passed (the next test). The
// breach gauge stays 1 meanwhile.
func TestResolutionWaitsForLiveCounts(t *testing.T) {
	ctx := context.Background()
	srv := testredis.Start(t)
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	am := newFakeAM(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s"))
	// A lease that outlasts the test (see TestFailedLoginsAlertAndResolve):
	// this one is about counts, not leadership.
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: path, AlertmanagerURL: am.URL, LeaseTTL: time.Hour,
		ResolveHold: time.Hour}, outageClient(t, srv), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)
	_, err := h.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", clock.Now()), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return am.count() > 0 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return testutil.ToFloat64(h.eng.m.countsLive) == 1 }, 5*time.Second, 5*time.Millisecond,
		"live once an event dated after the start is counted")

	killRedis(srv)
	h.advance(20 * time.Second)
	require.NoError(t, srv.Restart())
	failedAt := clock.Now()
	// The window (5m) empties: a check on live counts would resolve.
	h.advance(7 * time.Minute)
	require.Empty(t, am.resolutions(), "held: nothing dated after the error has been counted")
	require.Equal(t, 1.0, h.counter("breached", rule))
	require.Equal(t, 0.0, testutil.ToFloat64(h.eng.m.countsLive))
	res, err := h.eng.Check(ctx, rule)
	require.NoError(t, err)
	require.Equal(t, CheckResult{Rule: rule, Breached: true, Firing: 1, Held: 1}, res)

	// One event dated now (another IP, harmless) proves the poller has
	// caught up past the error: the next check resolves.
	appendedAt := clock.Now()
	_, err = h.buf.Append(ctx, thtest.Burst(t, 1, "fp", "198.51.100.1", appendedAt), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return testutil.ToFloat64(h.eng.m.newest) >= float64(failedAt.Unix()) }, 5*time.Second, 5*time.Millisecond)
	for len(am.resolutions()) == 0 {
		require.Less(t, clock.Since(failedAt), 15*time.Minute, "never resolved")
		h.advance(time.Second)
	}
	// A resolution's endsAt is the time of the check that resolved it.
	require.False(t, am.resolutions()[0].EndsAt.After(appendedAt.Add(31*time.Second)),
		"resolved within a check interval of live counts: %s", am.resolutions()[0].EndsAt.Sub(appendedAt))
	require.Equal(t, 1.0, testutil.ToFloat64(h.eng.m.countsLive))
	require.Eventually(t, func() bool { return h.counter("breached", rule) == 0 }, 5*time.Second, 5*time.Millisecond)
	require.True(t, am.resolutions()[0].StartsAt.Equal(am.all()[0].StartsAt))
}

// A quiet tenant (no event after the error) gets its resolution once the
// resolve hold has passed.
func TestResolutionAfterResolveHold(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	am := newFakeAM(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s"))
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: path, AlertmanagerURL: am.URL, ResolveHold: 10 * time.Minute,
		LeaseTTL: time.Hour}, testredis.Client(t), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)
	_, err := h.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", clock.Now()), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return am.count() > 0 }, 5*time.Second, 5*time.Millisecond)
	h.advance(time.Minute)
	h.eng.bufferFailed() // as the consumer does on a failed read
	failedAt := clock.Now()
	for len(am.resolutions()) == 0 {
		require.Less(t, clock.Since(failedAt), 15*time.Minute, "never resolved")
		h.advance(time.Second)
	}
	// A resolution's endsAt is the time of the check that resolved it.
	resolvedAt := am.resolutions()[0].EndsAt
	require.False(t, resolvedAt.Before(failedAt.Add(10*time.Minute)), "not before the hold: %s", resolvedAt.Sub(failedAt))
	require.False(t, resolvedAt.After(failedAt.Add(10*time.Minute+31*time.Second)), "within a check interval of the hold: %s", resolvedAt.Sub(failedAt))
}

// A replica that finds another replica holding the lease (Redis answers,
// the fencing counter grew past its token) stops reporting the breach: its
// gauges go to 0 and it no longer re-sends the alerts; the new leader
// reports them.
func TestLeaseHandOverMovesBreachGauges(t *testing.T) {
	ctx := context.Background()
	tenant := testredis.Name(t)
	am := newFakeAM(t, clockwork.NewRealClock())
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1s"))
	ttl := time.Second
	cfg := func(consumer string) Config {
		return Config{Tenant: tenant, RulesPath: path, LeaseTTL: ttl, Consumer: consumer, AlertmanagerURL: am.URL,
			ResendInterval: 2 * time.Second} // firing for 8 s at a time: no time-out from a slow machine
	}
	a := startEngine(t, cfg("a"), testredis.Client(t), clockwork.NewRealClock())
	require.Eventually(t, func() bool { return a.counter("leader") == 1 }, 3*time.Second, 5*time.Millisecond)
	b := startEngine(t, cfg("b"), testredis.Client(t), clockwork.NewRealClock())
	_, err := a.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", time.Now()), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.counter("breached", "FailedLoginsPerIP") == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 0.0, b.counter("breached", "FailedLoginsPerIP"))

	// a's lease vanishes (as after a long pause) and b takes it: Redis
	// answers all along.
	require.NoError(t, testredis.Client(t).Del(ctx, a.eng.leaseName).Err())
	require.Eventually(t, func() bool { return b.counter("leader") == 1 }, 3*ttl, 5*time.Millisecond)
	require.Eventually(t, func() bool { return b.counter("breached", "FailedLoginsPerIP") == 1 }, 3*ttl, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		return a.counter("leader") == 0 && a.counter("breached", "FailedLoginsPerIP") == 0 && a.counter("value", "FailedLoginsPerIP") == 0
	}, 3*ttl, 5*time.Millisecond, "a hands the breach over")
	require.False(t, a.eng.ledLast.Load())
	require.Empty(t, am.resolutions(), "a hand-over is no all-clear")
	starts := map[time.Time]bool{}
	for _, x := range am.all() {
		starts[x.StartsAt.UTC()] = true
	}
	require.Len(t, starts, 1, "one alert across the hand-over")
}
