package buffer

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

func TestPackID(t *testing.T) {
	for _, id := range []string{
		page(base, 0, 1)[0].ID,
		page(time.Now(), 123456789, 1)[0].ID,
		strings.Repeat("0", 56),
		strings.Repeat("9", 56),
	} {
		p, err := packID(id)
		require.NoError(t, err, id)
		require.Len(t, p, packedIDLen)
		back, err := unpackID(p)
		require.NoError(t, err)
		require.Equal(t, id, back)
	}
	for _, bad := range []string{"", "123", strings.Repeat("9", 55), strings.Repeat("9", 57),
		strings.Repeat("9", 55) + "x", "+" + strings.Repeat("9", 55), strings.Repeat("9", 42) + "-1234567890123"} {
		_, err := packID(bad)
		require.ErrorIs(t, err, errNotPackable, "%q", bad)
	}
	for _, bad := range [][]byte{nil, make([]byte, 23), make([]byte, 25), append([]byte{0xff}, make([]byte, 23)...)} {
		_, err := unpackID(bad)
		require.Error(t, err, "%x", bad)
	}
	// Order is kept: packed ids of one hour sort as the log_ids do.
	a, _ := packID(page(base, 1, 1)[0].ID)
	b, _ := packID(page(base.Add(time.Second), 0, 1)[0].ID)
	require.Negative(t, strings.Compare(string(a), string(b)))
}

// TestDedupeRecordLayout: the append script packs exactly as packID does,
// into the bucket of the log_id's hour, in the tenant's hash slot, and
// expires the bucket at its hour's end + retention + margin.
func TestDedupeRecordLayout(t *testing.T) {
	f := newFixture(t, Config{})
	at := f.clock.Now().UTC().Truncate(time.Second)
	logs := append(page(at, 0, 3), page(at.Add(-time.Hour), 7, 2)...)
	f.appendAll(t, logs[:3])
	_, err := f.b.Append(f.ctx, logs[3:], "")
	require.NoError(t, err)

	hour := at.Truncate(time.Hour)
	for _, h := range []time.Time{hour, hour.Add(-time.Hour)} {
		key := f.b.Key("seen:" + h.Format("2006010215"))
		require.Equal(t, "authpipe:{"+f.b.cfg.Tenant+"}:seen:"+h.Format("2006010215"), key)
		members, err := f.rdb.SMembers(f.ctx, key).Result()
		require.NoError(t, err)
		var want []string
		for _, l := range logs {
			if lh, _ := idHour(l.ID); lh == h.Format(hourLayout) {
				p, err := packID(l.ID)
				require.NoError(t, err)
				want = append(want, string(p))
			}
		}
		require.ElementsMatch(t, want, members)
		exp, err := f.rdb.ExpireTime(f.ctx, key).Result()
		require.NoError(t, err)
		require.Equal(t, h.Add(time.Hour+DefaultRetention+dedupeMargin).Unix(), int64(exp/time.Second), "EXPIRETIME of %s", key)
	}
	require.Zero(t, f.rdb.Exists(f.ctx, f.b.Key("seen")).Val(), "nothing written to the previous version's zset")
	n, err := f.b.dedupeEntries(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, n)
}

// TestTrimOnceBothGroupsAcked: an entry leaves the stream as soon as both
// consumer groups acknowledged it, not before; a re-poll of the delivered
// window is still deduplicated after the entries are gone.
func TestTrimOnceBothGroupsAcked(t *testing.T) {
	f := newFixture(t, Config{})
	logs := page(f.clock.Now().Truncate(time.Second), 0, 10)
	f.appendAll(t, logs)
	for _, g := range []string{"forward", "thresholds"} {
		require.NoError(t, f.b.EnsureGroup(f.ctx, g))
	}
	fwd, err := f.b.Read(f.ctx, "forward", "c", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "forward", entryIDs(fwd)...))
	thr, err := f.b.Read(f.ctx, "thresholds", "c", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "thresholds", entryIDs(thr[:4])...))

	// The threshold group is behind: what it has not acknowledged stays.
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
	require.Equal(t, logIDs(logs[4:]), f.streamLogIDs(t))

	require.NoError(t, f.b.Ack(f.ctx, "thresholds", entryIDs(thr[4:])...))
	n, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 6, n)
	require.Empty(t, f.streamLogIDs(t), "acknowledged by both groups, within the retention: gone")

	// The window polled again (a re-poll after a restart, a backfill):
	// nothing is stored twice, and Seen knows every log.
	added, err := f.b.Append(f.ctx, logs, logs[9].ID)
	require.NoError(t, err)
	require.Zero(t, added)
	seen, err := f.b.Seen(f.ctx, logIDs(logs))
	require.NoError(t, err)
	for i, s := range seen {
		require.True(t, s, "log %d", i)
	}
	require.Empty(t, f.streamLogIDs(t))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Zero(t, testutil.ToFloat64(f.b.loss.m.total), "a trimmed stream is no sign of lost data")
}

// TestDedupeBucketExpires: Redis forgets a bucket by itself at its
// EXPIREAT (hour's end + retention + margin; at least margin after the last
// write), so the record needs no authpipe to shrink; Trim forgets it by the
// clock as well.
func TestDedupeBucketExpires(t *testing.T) {
	f := newFixture(t, Config{Retention: MinRetention})
	f.b.margin = 2 * time.Second
	// Dated two hours ago: past hour end + retention + margin, so the
	// floor (Redis' second + margin) decides: 1–2 s from now.
	old := page(f.clock.Now().Add(-2*time.Hour).Truncate(time.Second), 0, 3)
	f.appendAll(t, old)
	keys := f.bucketKeys(t)
	require.Len(t, keys, 1)
	ttl, err := f.rdb.PTTL(f.ctx, keys[0]).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 500*time.Millisecond)
	require.LessOrEqual(t, ttl, 2*time.Second)
	added, err := f.b.Append(f.ctx, old, "")
	require.NoError(t, err)
	require.Zero(t, added, "deduplicated until the bucket expires")
	require.Eventually(t, func() bool { return f.rdb.Exists(f.ctx, keys[0]).Val() == 0 }, 5*time.Second, 50*time.Millisecond)
	added, err = f.b.Append(f.ctx, old, "")
	require.NoError(t, err)
	require.Equal(t, 3, added, "forgotten with its bucket")

	// Trim forgets by the clock, whatever Redis' expiry says.
	g := newFixture(t, Config{Retention: MinRetention})
	logs := page(g.clock.Now().Truncate(time.Second), 0, 2)
	g.appendAll(t, logs)
	_, err = g.b.Trim(g.ctx)
	require.NoError(t, err)
	require.Len(t, g.bucketKeys(t), 1, "within the retention: kept")
	g.clock.Advance(time.Hour + MinRetention)
	_, err = g.b.Trim(g.ctx)
	require.NoError(t, err)
	require.Empty(t, g.bucketKeys(t))
	require.Zero(t, g.rdb.ZCard(g.ctx, g.b.Key("seen:index")).Val(), "index emptied with the buckets")
	added, err = g.b.Append(g.ctx, logs, "")
	require.NoError(t, err)
	require.Equal(t, 2, added)
}

// TestDedupeSurvivesRestart: the record (and its expiry) is in the AOF: a
// Redis restart keeps a delivered, trimmed window deduplicated.
func TestDedupeSurvivesRestart(t *testing.T) {
	srv := startServer(t)
	rdb := clientOf(t, srv.Addr)
	f := newFixtureOn(t, rdb, Config{})
	logs := page(f.clock.Now().Truncate(time.Second), 0, 5)
	f.appendAll(t, logs)
	require.NoError(t, f.b.EnsureGroup(f.ctx, "forward"))
	got, err := f.b.Read(f.ctx, "forward", "c", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "forward", entryIDs(got)...))
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, n)
	keys := f.bucketKeys(t)
	exp := rdb.ExpireTime(f.ctx, keys[0]).Val()

	time.Sleep(1100 * time.Millisecond) // appendfsync everysec
	srv.Kill()
	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool { return f.b.Ping(f.ctx) == nil }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, exp, rdb.ExpireTime(f.ctx, keys[0]).Val(), "expiry kept")
	added, err := f.b.Append(f.ctx, logs, logs[4].ID)
	require.NoError(t, err)
	require.Zero(t, added)
}

// TestDedupePreviousVersionRecord: an upgrade in the middle of a window
// does not duplicate: the previous version's zset is still read (by the
// append script and Seen) and trimmed until it is empty, while new log_ids
// go to the buckets only.
func TestDedupePreviousVersionRecord(t *testing.T) {
	f := newFixture(t, Config{})
	at := f.clock.Now().Truncate(time.Second)
	old := page(at.Add(-time.Minute), 0, 4)
	for _, l := range old {
		ts, err := auth0log.IDTime(l.ID)
		require.NoError(t, err)
		require.NoError(t, f.rdb.ZAdd(f.ctx, f.b.Key("seen"), redisZ(float64(ts.UnixMilli()), l.ID)).Err())
	}
	fresh := page(at, 10, 3)
	offered := append(append([]auth0log.Log{}, old...), fresh...)
	seen, err := f.b.Seen(f.ctx, logIDs(offered))
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, true, true, false, false, false}, seen)
	added, err := f.b.Append(f.ctx, offered, fresh[2].ID)
	require.NoError(t, err)
	require.Equal(t, 3, added)
	require.Equal(t, logIDs(fresh), f.streamLogIDs(t))
	require.EqualValues(t, 4, f.rdb.ZCard(f.ctx, f.b.Key("seen")).Val(), "new log_ids go to the buckets")
	n, err := f.b.dedupeEntries(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 7, n)

	// Past the retention the zset empties, and Redis deletes it.
	f.clock.Advance(DefaultRetention + time.Hour)
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.Zero(t, f.rdb.Exists(f.ctx, f.b.Key("seen")).Val())
}

// TestMetricsDedupeAndMemory: authpipe_buffer_dedupe_entries{tenant} counts
// the record; authpipe_buffer_redis_memory_bytes is Redis' used_memory, and
// is left out (said once) where Redis refuses INFO.
func TestMetricsDedupeAndMemory(t *testing.T) {
	f := newFixture(t, Config{})
	f.appendAll(t, page(f.clock.Now(), 0, 6))
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP authpipe_buffer_dedupe_entries log_ids in the dedupe record (kept for the retention, after their entries left the stream).
# TYPE authpipe_buffer_dedupe_entries gauge
authpipe_buffer_dedupe_entries{tenant="`+f.b.cfg.Tenant+`"} 6
`), "authpipe_buffer_dedupe_entries"))

	reg := prometheus.NewPedanticRegistry()
	NewSafetyWatch(f.rdb, slog.New(slog.DiscardHandler), reg)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var used float64
	for _, mf := range mfs {
		if mf.GetName() == "authpipe_buffer_redis_memory_bytes" {
			used = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	require.Greater(t, used, float64(1<<20), "used_memory of a running redis-server")

	srv := testredis.StartWith(t, "--rename-command", "INFO", "")
	logs := &testlogs.Buffer{}
	reg = prometheus.NewPedanticRegistry()
	NewSafetyWatch(clientOf(t, srv.Addr), slog.New(slog.NewJSONHandler(logs, nil)), reg)
	for range 2 {
		n, err := testutil.GatherAndCount(reg, "authpipe_buffer_redis_memory_bytes")
		require.NoError(t, err)
		require.Zero(t, n)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "Redis refuses INFO memory"), logs.String())
}

// unpackID is packID's inverse; it refuses anything packID cannot have
// written.
func unpackID(p []byte) (string, error) {
	if len(p) != packedIDLen {
		return "", fmt.Errorf("packed log_id of %d bytes, want %d", len(p), packedIDLen)
	}
	out := make([]byte, 0, auth0log.IDLength)
	for g := 0; g < packedIDLen; g += packBytes {
		var v uint64
		for _, c := range p[g : g+packBytes] {
			v = v<<8 | uint64(c)
		}
		if v >= 1e14 {
			return "", fmt.Errorf("packed log_id group %d out of range", g/packBytes)
		}
		out = fmt.Appendf(out, "%014d", v)
	}
	return string(out), nil
}
