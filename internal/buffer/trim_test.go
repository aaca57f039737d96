package buffer

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/metrics"
)

// Trimming, Stats, Full and the metrics' exact output are checked on both
// backends by the conformance suite (conformance_suite_test.go); what follows is Redis's own.

// TestStatsLagUnknown: Redis 7.0 cannot tell a group's lag after a deletion
// in its undelivered range: the backlog falls back to the stream length.
func TestStatsLagUnknown(t *testing.T) {
	f := newFixture(t, Config{})
	f.appendAll(t, page(base, 0, 6))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 4, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID, got[1].ID))
	require.NoError(t, f.b.DeadLetter(f.ctx, "fwd", got[2], "invalid: no type"))
	st, err := f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 6, Backlog: 3, Pending: 1, DeadLetters: 1}, st, "lag known")

	require.NoError(t, f.rdb.XDel(f.ctx, f.b.StreamKey(), f.streamIDs(t)[5]).Err())
	groups, err := f.rdb.XInfoGroups(f.ctx, f.b.StreamKey()).Result()
	require.NoError(t, err)
	require.Len(t, groups, 1)
	require.EqualValues(t, -1, groups[0].Lag, "redis reports the lag as unknown")
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 5, Backlog: 5, Pending: 1, DeadLetters: 1}, st)
}

// TestMetricsRedisDown: while Redis is unreachable the gauges keep the
// values of the last scrape that reached it (never a gap, never a 0),
// authpipe_buffer_up says 0 and the last-success timestamp says how old
// the values are; the failure is logged once, and the recovery once.
func TestMetricsRedisDown(t *testing.T) {
	srv := startServer(t)
	var logs bytes.Buffer
	rdb := clientOf(t, srv.Addr)
	reg := prometheus.NewPedanticRegistry()
	clock := clockwork.NewFakeClockAt(time.Unix(1_700_000_000, 0))
	treg := metrics.Tenant(reg, "down")
	b, err := NewRedis(rdb, Config{Tenant: "down"}, Deps{Registerer: treg, Clock: clock,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Stages: metrics.NewStages(treg)})
	require.NoError(t, err)
	ctx := t.Context()
	_, err = b.Append(ctx, page(base, 0, 3), "")
	require.NoError(t, err)
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	got, err := b.Read(ctx, "fwd", "c", 1, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, b.DeadLetter(ctx, "fwd", got[0], "invalid: test"))
	_, err = b.Read(ctx, "fwd", "c", 1, 10*time.Millisecond)
	require.NoError(t, err)

	gauges := []string{"authpipe_buffer_backlog_events", "authpipe_buffer_pending_events",
		"authpipe_buffer_stream_events", "authpipe_dead_letter_events",
		"authpipe_buffer_up", "authpipe_buffer_stats_last_success_timestamp_seconds"}
	want := func(up int, at int64, backlog int) string {
		return fmt.Sprintf(`
# HELP authpipe_buffer_backlog_events Entries not yet acknowledged by the slowest consumer group (undelivered + pending); the stream length while no group exists.
# TYPE authpipe_buffer_backlog_events gauge
authpipe_buffer_backlog_events{tenant="down"} %d
# HELP authpipe_buffer_pending_events Entries delivered but not yet acknowledged, summed over consumer groups.
# TYPE authpipe_buffer_pending_events gauge
authpipe_buffer_pending_events{tenant="down"} 1
# HELP authpipe_buffer_stats_last_success_timestamp_seconds When the buffer last answered the statistics query behind the buffer gauges (0: never). While it does not answer, authpipe_buffer_backlog_events, _pending_events, _stream_events, _dedupe_entries and authpipe_dead_letter_events keep the values read then.
# TYPE authpipe_buffer_stats_last_success_timestamp_seconds gauge
authpipe_buffer_stats_last_success_timestamp_seconds{tenant="down"} %d
# HELP authpipe_buffer_stream_events Entries in the stream (acknowledged ones included, until trimmed).
# TYPE authpipe_buffer_stream_events gauge
authpipe_buffer_stream_events{tenant="down"} 3
# HELP authpipe_buffer_up 1 if the buffer (Redis, or the embedded buffer's file) answered this scrape's statistics query, 0 if it did not.
# TYPE authpipe_buffer_up gauge
authpipe_buffer_up{tenant="down"} %d
# HELP authpipe_dead_letter_events Entries in the dead-letter stream.
# TYPE authpipe_dead_letter_events gauge
authpipe_dead_letter_events{tenant="down"} 1
`, backlog, at, up)
	}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want(1, 1_700_000_000, 2)), gauges...))

	time.Sleep(1100 * time.Millisecond) // appendfsync everysec: the values survive the kill
	srv.Kill()
	for range 3 { // every scrape while down: the same values, up 0
		clock.Advance(15 * time.Second)
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want(0, 1_700_000_000, 2)), gauges...))
	}
	require.Equal(t, 1, strings.Count(logs.String(), "keeping the last values"), "the failure is logged once:\n%s", logs.String())

	require.NoError(t, srv.Restart())
	clock.Advance(15 * time.Second)
	// Redis 7.0 forgets a group's lag on restart: the backlog is the stream
	// length until the group reads again (see TestRedisKillRestart).
	require.Eventually(t, func() bool {
		return testutil.GatherAndCompare(reg, strings.NewReader(want(1, 1_700_000_060, 3)), gauges...) == nil
	}, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), "answers the statistics query again"), logs.String())
	require.Contains(t, logs.String(), `"unanswered_for":"1m0s"`)
}

// TestMetricsBeforeFirstAnswer: a buffer that never answered reports its
// gauges at 0 with authpipe_buffer_up 0 and a last-success time of 0: the
// series exist from the start, and the staleness metric says they mean
// nothing yet.
func TestMetricsBeforeFirstAnswer(t *testing.T) {
	srv := startServer(t)
	rdb := clientOf(t, srv.Addr)
	srv.Kill()
	reg := prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(reg, "never")
	_, err := NewRedis(rdb, Config{Tenant: "never"}, Deps{Registerer: treg, Stages: metrics.NewStages(treg)})
	require.NoError(t, err)
	for _, name := range []string{"authpipe_buffer_backlog_events", "authpipe_buffer_pending_events",
		"authpipe_buffer_stream_events", "authpipe_dead_letter_events", "authpipe_buffer_up",
		"authpipe_buffer_stats_last_success_timestamp_seconds"} {
		n, err := testutil.GatherAndCount(reg, name)
		require.NoError(t, err)
		require.Equal(t, 1, n, name)
	}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		switch mf.GetName() {
		case "authpipe_buffer_up", "authpipe_buffer_stats_last_success_timestamp_seconds", "authpipe_buffer_backlog_events":
			require.Zero(t, mf.GetMetric()[0].GetGauge().GetValue(), mf.GetName())
		}
	}
}
