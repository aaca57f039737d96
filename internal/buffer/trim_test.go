package buffer

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// Trimming, Stats, Full and the metrics' exact output are checked on both
// backends by the conformance suite (buffertest); what follows is Redis's own.

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

// TestMetricsRedisDown: a scrape while Redis is unreachable leaves the
// gauges out instead of failing the scrape or reporting zeros.
func TestMetricsRedisDown(t *testing.T) {
	srv := startServer(t)
	f := newFixtureOn(t, clientOf(t, srv.Addr), Config{})
	f.appendAll(t, page(base, 0, 1))
	n, err := testutil.GatherAndCount(f.reg, "authpipe_buffer_stream_events")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	srv.Kill()
	n, err = testutil.GatherAndCount(f.reg, "authpipe_buffer_stream_events", "authpipe_buffer_lost_total")
	require.NoError(t, err)
	require.Equal(t, 1, n, "only the counter is left")
}
