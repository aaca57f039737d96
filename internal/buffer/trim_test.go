package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestTrim(t *testing.T) {
	type group struct {
		name string
		read int   // entries delivered (from the start)
		ack  []int // of those, acknowledged
	}
	tests := []struct {
		name        string
		logs        int
		groups      []group
		future      bool  // clock past retention of every entry
		wantKept    []int // indexes of entries left in the stream
		wantSeenGon bool  // dedupe set emptied
	}{
		{name: "within retention nothing goes", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}}, wantKept: []int{0, 1, 2, 3}},
		{name: "no group: retention only, within", logs: 3, wantKept: []int{0, 1, 2}},
		{name: "no group: retention only, past", logs: 3, future: true, wantKept: nil, wantSeenGon: true},
		{name: "all acked: everything old goes", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}}, future: true, wantKept: nil, wantSeenGon: true},
		{name: "undelivered entries stay", logs: 6, groups: []group{{"g", 3, []int{0, 1, 2}}}, future: true, wantKept: []int{3, 4, 5}, wantSeenGon: true},
		{name: "oldest pending bounds the trim", logs: 6, groups: []group{{"g", 6, []int{0, 1, 3, 4, 5}}}, future: true, wantKept: []int{2, 3, 4, 5}, wantSeenGon: true},
		{name: "nothing delivered to a group", logs: 4, groups: []group{{"g", 4, []int{0, 1, 2, 3}}, {"new", 0, nil}}, future: true, wantKept: []int{0, 1, 2, 3}, wantSeenGon: true},
		{
			name: "slowest of several groups bounds",
			logs: 8,
			groups: []group{
				{"fast", 8, []int{0, 1, 2, 3, 4, 5, 6, 7}},
				{"slow", 5, []int{0, 1, 2, 4}},   // 3 pending
				{"slower", 4, []int{0, 1, 2, 3}}, // 4 undelivered
			},
			future: true, wantKept: []int{3, 4, 5, 6, 7}, wantSeenGon: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{Retention: time.Hour})
			// Log ids embed the current time: the dedupe set is within
			// retention unless the clock moves past it.
			f.appendAll(t, page(time.Now().Truncate(time.Second), 0, tt.logs))
			ids := f.streamIDs(t)
			for _, g := range tt.groups {
				require.NoError(t, f.b.EnsureGroup(f.ctx, g.name))
				if g.read == 0 {
					continue
				}
				got, err := f.b.Read(f.ctx, g.name, "c", g.read, 10*time.Millisecond)
				require.NoError(t, err)
				require.Len(t, got, g.read)
				var acks []string
				for _, i := range g.ack {
					acks = append(acks, got[i].ID)
				}
				require.NoError(t, f.b.Ack(f.ctx, g.name, acks...))
			}
			if tt.future {
				f.clock.Advance(2 * time.Hour)
			}

			n, err := f.b.Trim(f.ctx)
			require.NoError(t, err)
			var want []string
			for _, i := range tt.wantKept {
				want = append(want, ids[i])
			}
			require.Equal(t, want, nilIfEmpty(f.streamIDs(t)))
			require.EqualValues(t, tt.logs-len(tt.wantKept), n)
			require.EqualValues(t, n, testutil.ToFloat64(f.b.m.trimmed))
			seen, err := f.rdb.ZCard(f.ctx, f.b.Key("seen")).Result()
			require.NoError(t, err)
			if tt.wantSeenGon {
				require.Zero(t, seen)
			} else {
				require.EqualValues(t, tt.logs, seen)
			}
			// Every entry still pending can be delivered.
			for _, g := range tt.groups {
				for _, p := range f.pending(t, g.name) {
					require.Contains(t, want, p.ID, "group %s: pending entry trimmed", g.name)
				}
			}
			n, err = f.b.Trim(f.ctx)
			require.NoError(t, err)
			require.Zero(t, n, "trim is idempotent")
		})
	}
}

func TestTrimEmpty(t *testing.T) {
	f := newFixture(t, Config{})
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoError(t, f.b.EnsureGroup(f.ctx, "g")) // empty stream with a group
	f.clock.Advance(30 * 24 * time.Hour)
	n, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestStatsAndFull(t *testing.T) {
	f := newFixture(t, Config{MaxEvents: 5})
	st, err := f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{}, st, "no stream yet")
	full, err := f.b.Full(f.ctx)
	require.NoError(t, err)
	require.False(t, full)

	f.appendAll(t, page(base, 0, 6))
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 6, Backlog: 6}, st, "no group yet: all is backlog")
	full, err = f.b.Full(f.ctx)
	require.NoError(t, err)
	require.True(t, full)

	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 4, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID, got[1].ID))
	require.NoError(t, f.b.DeadLetter(f.ctx, "fwd", got[2], "invalid: no type"))
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	// 6 stored: 2 acked, 1 dead-lettered, 1 pending, 2 undelivered.
	require.Equal(t, Stats{Length: 6, Backlog: 3, Pending: 1, DeadLetters: 1}, st)
	full, err = f.b.Full(f.ctx)
	require.NoError(t, err)
	require.False(t, full)

	// A second, slower group decides Full.
	require.NoError(t, f.b.EnsureGroup(f.ctx, "slow"))
	full, err = f.b.Full(f.ctx)
	require.NoError(t, err)
	require.True(t, full)
	st, err = f.b.Stats(f.ctx, "slow")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 6, Backlog: 6, DeadLetters: 1}, st)

	// Redis 7.0 cannot tell the lag after a deletion in the undelivered
	// range: the backlog falls back to the stream length.
	require.NoError(t, f.rdb.XDel(f.ctx, f.b.StreamKey(), f.streamIDs(t)[5]).Err())
	groups, err := f.rdb.XInfoGroups(f.ctx, f.b.StreamKey()).Result()
	require.NoError(t, err)
	for _, g := range groups {
		if g.Name == "fwd" {
			require.EqualValues(t, -1, g.Lag, "redis reports the lag as unknown")
		}
	}
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 5, Backlog: 5, Pending: 1, DeadLetters: 1}, st)

	unbounded := newFixture(t, Config{})
	unbounded.appendAll(t, page(base, 0, 3))
	full, err = unbounded.b.Full(f.ctx)
	require.NoError(t, err)
	require.False(t, full, "MaxEvents 0 is never full")
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, Config{MaxDeliveries: 3})
	tenant := f.b.Config().Tenant
	names := []string{
		"authpipe_buffer_backlog_events", "authpipe_buffer_pending_events", "authpipe_buffer_stream_events",
		"authpipe_dead_letter_events", "authpipe_buffer_duplicates_total", "authpipe_dead_letters_total",
		"authpipe_buffer_trimmed_total", "authpipe_buffer_lost_total",
	}
	logs := page(base, 0, 5)
	f.appendAll(t, logs)
	f.appendAll(t, logs[:2])
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 3, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID))
	require.NoError(t, f.b.DeadLetter(f.ctx, "fwd", got[1], Reason(ReasonInvalid, "no user")))

	want := `
# HELP authpipe_buffer_backlog_events Entries not yet acknowledged by the slowest consumer group (undelivered + pending); the stream length while no group exists.
# TYPE authpipe_buffer_backlog_events gauge
authpipe_buffer_backlog_events{tenant="T"} 3
# HELP authpipe_buffer_duplicates_total Logs offered to the buffer that were already stored (same log_id), not stored again.
# TYPE authpipe_buffer_duplicates_total counter
authpipe_buffer_duplicates_total{tenant="T"} 2
# HELP authpipe_buffer_lost_total Pending entries found deleted from the stream before acknowledgement. Must stay 0.
# TYPE authpipe_buffer_lost_total counter
authpipe_buffer_lost_total{tenant="T"} 0
# HELP authpipe_buffer_pending_events Entries delivered but not yet acknowledged, summed over consumer groups.
# TYPE authpipe_buffer_pending_events gauge
authpipe_buffer_pending_events{tenant="T"} 1
# HELP authpipe_buffer_stream_events Entries in the stream (acknowledged ones included, until trimmed).
# TYPE authpipe_buffer_stream_events gauge
authpipe_buffer_stream_events{tenant="T"} 5
# HELP authpipe_buffer_trimmed_total Stream entries removed by retention trimming.
# TYPE authpipe_buffer_trimmed_total counter
authpipe_buffer_trimmed_total{tenant="T"} 0
# HELP authpipe_dead_letter_events Entries in the dead-letter stream.
# TYPE authpipe_dead_letter_events gauge
authpipe_dead_letter_events{tenant="T"} 1
# HELP authpipe_dead_letters_total Entries moved to the dead-letter stream, by reason.
# TYPE authpipe_dead_letters_total counter
authpipe_dead_letters_total{reason="invalid",tenant="T"} 1
authpipe_dead_letters_total{reason="max_deliveries",tenant="T"} 0
authpipe_dead_letters_total{reason="other",tenant="T"} 0
authpipe_dead_letters_total{reason="oversize",tenant="T"} 0
authpipe_dead_letters_total{reason="segment_rejected",tenant="T"} 0
`
	want = strings.ReplaceAll(want, `tenant="T"`, `tenant="`+tenant+`"`)
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(want), names...))

	stage := `
# HELP authpipe_stage_events_acked_total Events the next stage confirmed as durably taken.
# TYPE authpipe_stage_events_acked_total counter
authpipe_stage_events_acked_total{stage="buffer",tenant="T"} 1
# HELP authpipe_stage_events_failed_total Events a pipeline stage failed to pass on (each failure).
# TYPE authpipe_stage_events_failed_total counter
authpipe_stage_events_failed_total{stage="buffer",tenant="T"} 1
# HELP authpipe_stage_events_received_total Events that entered a pipeline stage.
# TYPE authpipe_stage_events_received_total counter
authpipe_stage_events_received_total{stage="buffer",tenant="T"} 7
# HELP authpipe_stage_events_written_total Events a pipeline stage passed on to the next.
# TYPE authpipe_stage_events_written_total counter
authpipe_stage_events_written_total{stage="buffer",tenant="T"} 5
`
	stage = strings.ReplaceAll(stage, `tenant="T"`, `tenant="`+tenant+`"`)
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(stage),
		"authpipe_stage_events_acked_total", "authpipe_stage_events_failed_total",
		"authpipe_stage_events_received_total", "authpipe_stage_events_written_total"))

	problems, err := testutil.GatherAndLint(f.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
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
