package buffer

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

// lossFixture is a Redis buffer whose logs the test reads, with a tenant
// state set up by deliver: two groups, three pages of ten logs dated
// around now, fwd has acknowledged the first 15 entries (and holds 5 more
// pending), thr all 30.
type lossFixture struct {
	*fixture
	logs *testlogs.Buffer
	all  []auth0log.Log // appended by deliver, in order
}

func newLossFixture(t *testing.T, rdb redis.UniversalClient) *lossFixture {
	t.Helper()
	logs := &testlogs.Buffer{}
	reg := prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(reg, testredis.Name(t))
	stages := metrics.NewStages(treg)
	clock := clockwork.NewFakeClockAt(time.Now())
	b, err := NewRedis(rdb, Config{Tenant: testredis.Name(t)}, Deps{
		Registerer: treg, Clock: clock, Stages: stages,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	require.NoError(t, err)
	return &lossFixture{fixture: &fixture{b: b, rdb: rdb, reg: reg, stages: stages, clock: clock, ctx: t.Context()}, logs: logs}
}

func (f *lossFixture) deliver(t *testing.T) {
	t.Helper()
	ctx := f.ctx
	require.NoError(t, f.b.EnsureGroup(ctx, "fwd"))
	require.NoError(t, f.b.EnsureGroup(ctx, "thr"))
	now := f.clock.Now()
	for i := range 3 {
		p := page(now.Add(time.Duration(i-3)*time.Minute), 10*i, 10)
		f.appendAll(t, p)
		f.all = append(f.all, p...)
	}
	got, err := f.b.Read(ctx, "fwd", "c1", 20, 0)
	require.NoError(t, err)
	require.Len(t, got, 20)
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got[:15])...))
	got, err = f.b.Read(ctx, "thr", "c1", 30, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(ctx, "thr", entryIDs(got)...))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, f.wantDelivered(15), f.delivered(), "watermark: the second of the first entry fwd has not acknowledged")
	require.Zero(t, f.incidents())
}

// wantDelivered is the watermark when the i-th appended log is the first
// not acknowledged by every group.
func (f *lossFixture) wantDelivered(i int) string {
	at, _ := auth0log.IDTime(f.all[i].ID)
	return auth0log.CheckpointAt(at)
}

func (f *lossFixture) delivered() string {
	f.b.loss.mu.Lock()
	defer f.b.loss.mu.Unlock()
	return f.b.loss.mem.delivered
}

func (f *lossFixture) incidents() float64 { return testutil.ToFloat64(f.b.loss.m.total) }

func (f *lossFixture) errorLines() []string {
	var out []string
	for line := range strings.SplitSeq(f.logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			out = append(out, line)
		}
	}
	return out
}

func (f *lossFixture) groups(t *testing.T) []string {
	t.Helper()
	gs, err := f.rdb.XInfoGroups(f.ctx, f.b.StreamKey()).Result()
	require.NoError(t, err)
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	return names
}

func TestLossNotOnAFreshInstall(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	ctx := f.ctx
	require.NoError(t, f.b.CheckLoss(ctx))
	// A backfill whose append fails writes nothing: nothing to have lost.
	require.NoError(t, f.rdb.Set(ctx, f.b.Key("seen"), "not a zset", 0).Err())
	_, err := f.b.Append(ctx, page(f.clock.Now().Add(-time.Hour), 0, 2), "")
	require.Error(t, err)
	require.NoError(t, f.rdb.Del(ctx, f.b.Key("seen")).Err())
	require.NoError(t, f.b.CheckLoss(ctx))
	pos, err := f.b.Resume(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, Position{}, pos, "nothing stored, nothing known: Auth0's retention from its start")
	require.NoError(t, f.b.EnsureGroup(ctx, "fwd"))
	f.appendAll(t, page(f.clock.Now(), 0, 5))
	_, err = f.b.Read(ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.EnsureGroup(ctx, "fwd"))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Zero(t, f.incidents())
	require.Empty(t, f.errorLines())
	_, ok := f.b.LastIncident()
	require.False(t, ok)
}

func TestLossRedisRestartedEmpty(t *testing.T) {
	srv := testredis.Start(t)
	f := newLossFixture(t, redis.NewClient(&redis.Options{Addr: srv.Addr}))
	f.deliver(t)
	oldCP := f.all[29].ID
	require.NoError(t, srv.RestartEmpty())

	// The forwarder's next read meets NOGROUP: one incident, groups back.
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.Empty(t, got)
	require.Equal(t, 1.0, f.incidents())
	require.ElementsMatch(t, []string{"fwd", "thr"}, f.groups(t))
	inc, ok := f.b.LastIncident()
	require.True(t, ok)
	require.Equal(t, []string{LostCheckpoint, LostStream, LostGroup}, inc.Kinds())
	require.True(t, inc.Repoll)
	require.Equal(t, f.wantDelivered(15), inc.RepollFrom, "from the last point known delivered")
	require.Equal(t, oldCP, inc.RepollUntil)

	// The same loss seen by the other group, a check and an append: still one.
	_, err = f.b.Read(f.ctx, "thr", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
	lines := f.errorLines()
	require.Len(t, lines, 1, "one ERROR line per incident")
	for _, want := range []string{"buffer lost data", "checkpoint gone", "stream gone", "consumer group fwd gone",
		"consumer group thr gone", `"repoll_from_log_id":"` + inc.RepollFrom, `"repoll_until_log_id":"` + oldCP} {
		require.Contains(t, lines[0], want)
	}
	require.Equal(t, 1.0, testutil.ToFloat64(f.b.loss.m.found.WithLabelValues(LostStream)))
	require.Zero(t, testutil.ToFloat64(f.b.loss.m.found.WithLabelValues(LostFile)))
	require.NotZero(t, testutil.ToFloat64(f.b.loss.m.repollFrom))

	// A page from the poller's old position is refused until the poller
	// has taken the re-poll: it would hide the lost window.
	next := page(f.clock.Now(), 30, 5)
	_, err = f.b.Append(f.ctx, next, next[4].ID)
	require.ErrorIs(t, err, ErrDataLoss)
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, inc.RepollFrom, pos.From)
	require.NotNil(t, pos.Repoll)
	require.EqualValues(t, 1, pos.Generation)
	require.EqualValues(t, 1, f.b.LossGeneration())

	// The re-poll appends from the watermark: events 15 on are buffered
	// again and delivered to both groups.
	repoll := f.all[15:]
	f.appendAll(t, repoll)
	got, err = f.b.Read(f.ctx, "fwd", "c1", 100, 0)
	require.NoError(t, err)
	require.Equal(t, logIDs(repoll), entryLogIDs(got))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
	pos, err = f.b.Resume(f.ctx, pos.Generation)
	require.NoError(t, err)
	require.Equal(t, oldCP, pos.From)
	require.Nil(t, pos.Repoll)
}

func TestLossFlushAll(t *testing.T) {
	srv := testredis.Start(t)
	f := newLossFixture(t, redis.NewClient(&redis.Options{Addr: srv.Addr}))
	f.deliver(t)
	require.NoError(t, f.rdb.FlushAll(f.ctx).Err())

	// The poller's append finds the checkpoint gone and writes nothing.
	next := page(f.clock.Now(), 30, 5)
	_, err := f.b.Append(f.ctx, next, next[4].ID)
	require.ErrorIs(t, err, ErrDataLoss)
	n, err := f.rdb.Exists(f.ctx, f.b.Key("checkpoint")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing written")
	require.Equal(t, 1.0, f.incidents())
	require.ElementsMatch(t, []string{"fwd", "thr"}, f.groups(t), "groups recreated at once")
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, f.wantDelivered(15), pos.From)
}

func TestLossGroupsDestroyed(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	for _, g := range []string{"fwd", "thr"} {
		require.NoError(t, f.rdb.XGroupDestroy(f.ctx, f.b.StreamKey(), g).Err())
	}

	// Recreated where delivery stood: the 15 entries fwd had not
	// acknowledged come again (its 5 pending ones included), not the
	// 15 before.
	got, err := f.b.Read(f.ctx, "fwd", "c1", 100, 0)
	require.NoError(t, err)
	require.Equal(t, logIDs(f.all[15:]), entryLogIDs(got))
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostGroup}, inc.Kinds())
	require.False(t, inc.Repoll, "the stream holds every event: nothing to poll again")
	got, err = f.b.Read(f.ctx, "thr", "c1", 100, 0)
	require.NoError(t, err)
	require.Len(t, got, 15)
	require.Equal(t, 1.0, f.incidents())

	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, f.all[29].ID, pos.From, "the stored checkpoint")
	require.Nil(t, pos.Repoll)
	require.Contains(t, f.errorLines()[0], "nothing to poll again")
}

func TestLossCheckpointDeleted(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	require.NoError(t, f.rdb.Del(f.ctx, f.b.Key("checkpoint")).Err())

	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, f.wantDelivered(15), pos.From)
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostCheckpoint}, inc.Kinds())

	// Re-polled pages are deduped against what the stream still holds.
	added, err := f.b.Append(f.ctx, f.all[15:], f.all[29].ID)
	require.NoError(t, err)
	require.Zero(t, added)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
}

func TestLossCheckpointWentBack(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	// A replica promoted before it had the last page.
	require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("checkpoint"), f.all[19].ID, 0).Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))
	inc, ok := f.b.LastIncident()
	require.True(t, ok)
	require.Equal(t, []string{LostCheckpoint}, inc.Kinds())
	require.Contains(t, inc.Found[0].Detail, "went back from "+f.all[29].ID+" to "+f.all[19].ID)
	require.Equal(t, f.wantDelivered(15), inc.RepollFrom)
}

func TestLossDedupeRecord(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	buckets := f.bucketKeys(t)
	require.NotEmpty(t, buckets)
	require.NoError(t, f.rdb.Del(f.ctx, buckets...).Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostDedupe}, inc.Kinds())
	require.True(t, inc.Repoll)

	// Logs older than the retention are no longer in the record by
	// design: no sign.
	g := newLossFixture(t, testredis.Client(t))
	old := page(g.clock.Now().Add(-DefaultRetention+time.Minute), 0, 3)
	g.appendAll(t, old)
	h, err := idHour(old[2].ID)
	require.NoError(t, err)
	packed, err := packID(old[2].ID)
	require.NoError(t, err)
	require.EqualValues(t, 1, g.rdb.SRem(g.ctx, g.b.bucketKey(h), packed).Val())
	require.NoError(t, g.b.CheckLoss(g.ctx))
	require.Zero(t, g.incidents())
}

// TestLossDedupeRecordStreamTrimmed: once every entry is acknowledged and
// trimmed, the stream holds nothing to compare the record with; the
// highest log_id ever buffered (head) is compared instead, so a record
// lost (evicted, flushed with the checkpoint kept) is still noticed.
func TestLossDedupeRecordStreamTrimmed(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	got, err := f.b.Read(f.ctx, "fwd", "c1", 20, 0)
	require.NoError(t, err)
	require.Len(t, got, 10)
	var pending []string
	for _, p := range f.pending(t, "fwd") {
		pending = append(pending, p.ID)
	}
	require.Len(t, pending, 15)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", pending...))
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 30, n)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Zero(t, f.incidents(), "a trimmed stream is no sign of loss")

	require.NoError(t, f.rdb.Del(f.ctx, f.bucketKeys(t)...).Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostDedupe}, inc.Kinds())
	require.Contains(t, inc.Found[0].Detail, f.all[29].ID)
	require.True(t, inc.Repoll)
}

func TestLossFencingCounter(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	fence := Fence{Key: f.b.Key("lease:poller:fence"), Token: 5}
	require.NoError(t, f.rdb.Set(f.ctx, fence.Key, 5, 0).Err())
	p := page(f.clock.Now(), 0, 3)
	_, err := f.b.AppendFenced(f.ctx, p, p[2].ID, fence)
	require.NoError(t, err)
	require.NoError(t, f.b.CheckLoss(f.ctx))

	// The lease found the counter gone and raised it above its token
	// before the buffer looked: the observation alone tells.
	require.NoError(t, f.rdb.Set(f.ctx, fence.Key, 6, 0).Err())
	f.b.ObserveFence(0)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostFence}, inc.Kinds())
	require.False(t, inc.Repoll)

	// Gone while the buffer looks (a later loss); then the lease reports
	// the same loss.
	f.clock.Advance(foldWindow)
	_, err = f.b.AppendFenced(f.ctx, page(f.clock.Now(), 3, 1), page(f.clock.Now(), 3, 1)[0].ID, Fence{Key: fence.Key, Token: 6})
	require.NoError(t, err)
	require.NoError(t, f.rdb.Del(f.ctx, fence.Key).Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 2.0, f.incidents())
	f.b.ObserveFence(0)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 2.0, f.incidents(), "one loss, counted once")

	// A fenced append that finds the counter gone reports it too.
	f.clock.Advance(foldWindow)
	require.NoError(t, f.rdb.Set(f.ctx, fence.Key, 7, 0).Err())
	q := page(f.clock.Now(), 4, 1)
	_, err = f.b.AppendFenced(f.ctx, q, q[0].ID, Fence{Key: fence.Key, Token: 7})
	require.NoError(t, err)
	require.NoError(t, f.rdb.Del(f.ctx, fence.Key).Err())
	_, err = f.b.AppendFenced(f.ctx, q, q[0].ID, Fence{Key: fence.Key, Token: 7})
	require.ErrorIs(t, err, ErrFenced)
	require.Equal(t, 3.0, f.incidents())
}

func TestLossNotWhileRedisIsDown(t *testing.T) {
	// appendfsync always: a killed Redis keeps every write, as a slow or
	// briefly unreachable one does.
	srv := testredis.StartWith(t, "--appendfsync", "always")
	f := newLossFixture(t, redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1}))
	f.deliver(t)
	srv.Kill()
	require.Error(t, f.b.CheckLoss(f.ctx))
	_, err := f.b.Read(f.ctx, "fwd", "c1", 10, 0)
	require.Error(t, err)
	_, err = f.b.Resume(f.ctx, 0)
	require.Error(t, err)
	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool { return f.b.CheckLoss(f.ctx) == nil }, 10*time.Second, 50*time.Millisecond)
	got, err := f.b.Read(f.ctx, "fwd", "c1", 100, 0)
	require.NoError(t, err)
	require.Len(t, got, 10, "the undelivered rest; nothing redelivered")
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, f.all[29].ID, pos.From)
	require.Zero(t, f.incidents())
	require.Empty(t, f.errorLines())
}

func TestLossCountedOnceAcrossComponents(t *testing.T) {
	srv := testredis.Start(t)
	f := newLossFixture(t, redis.NewClient(&redis.Options{Addr: srv.Addr}))
	f.deliver(t)
	require.NoError(t, srv.RestartEmpty())
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _, _ = f.b.Read(f.ctx, "fwd", "c1", 10, 0) })
		wg.Go(func() { _, _ = f.b.Read(f.ctx, "thr", "c2", 10, 0) })
		wg.Go(func() { _, _ = f.b.Reclaim(f.ctx, "fwd", "c3", 0, 10) })
		wg.Go(func() { _ = f.b.CheckLoss(f.ctx) })
		wg.Go(func() { _ = f.b.EnsureGroup(f.ctx, "fwd") })
		wg.Go(func() { p := page(f.clock.Now(), 40, 2); _, _ = f.b.Append(f.ctx, p, p[1].ID) })
	}
	wg.Wait()
	require.Equal(t, 1.0, f.incidents())
	require.Len(t, f.errorLines(), 1)
}

func TestLossWatermarkFollowsBackfill(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	ctx := f.ctx
	require.NoError(t, f.b.EnsureGroup(ctx, "fwd"))
	now := f.clock.Now()
	cur := page(now, 0, 5)
	f.appendAll(t, cur)
	got, err := f.b.Read(ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got)...))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, cur[4].ID, f.delivered(), "all acknowledged: the checkpoint")

	// A backfill appends older logs behind the checkpoint: the watermark
	// drops to them at once, before any survey.
	older := page(now.Add(-2*time.Hour), 0, 3)
	_, err = f.b.Append(ctx, older, "")
	require.NoError(t, err)
	at, _ := auth0log.IDTime(older[0].ID)
	require.Equal(t, auth0log.CheckpointAt(at), f.delivered())
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, auth0log.CheckpointAt(at), f.delivered(), "still unacknowledged")

	// So do dead letters replayed.
	got, err = f.b.Read(ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.NoError(t, f.b.DeadLetter(ctx, "fwd", got[0], "invalid: test"))
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got[1:])...))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, cur[4].ID, f.delivered())
	_, err = f.b.ReplayDeadLetters(ctx, nil)
	require.NoError(t, err)
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, auth0log.CheckpointAt(at), f.delivered())

	got, err = f.b.Read(ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got)...))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, cur[4].ID, f.delivered())
	n, err := f.rdb.ZCard(ctx, f.b.Key("behind")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "acknowledged entries leave the behind set")
}

func entryLogIDs(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.LogID
	}
	return out
}

func TestLossFoundInStepsIsOneIncident(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	f.deliver(t)
	gen0 := f.b.LossGeneration()

	// An operator destroys the groups one command at a time, and deletes
	// the checkpoint a moment later.
	require.NoError(t, f.rdb.XGroupDestroy(f.ctx, f.b.StreamKey(), "fwd").Err())
	_, err := f.b.Read(f.ctx, "fwd", "c1", 100, 0)
	require.NoError(t, err)
	inc, _ := f.b.LastIncident()
	require.False(t, inc.Repoll)
	f.clock.Advance(time.Second)
	require.NoError(t, f.rdb.XGroupDestroy(f.ctx, f.b.StreamKey(), "thr").Err())
	_, err = f.b.Read(f.ctx, "thr", "c1", 100, 0)
	require.NoError(t, err)
	f.clock.Advance(time.Second)
	require.NoError(t, f.rdb.Del(f.ctx, f.b.Key("checkpoint")).Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))

	require.Equal(t, 1.0, f.incidents())
	require.Len(t, f.errorLines(), 1)
	inc, _ = f.b.LastIncident()
	require.EqualValues(t, 1, inc.Number)
	require.Equal(t, []string{LostCheckpoint, LostGroup}, inc.Kinds())
	require.True(t, inc.Repoll, "the checkpoint found gone later asks for a re-poll")
	require.Equal(t, f.wantDelivered(15), inc.RepollFrom, "from what was known before the first sign")
	require.Greater(t, f.b.LossGeneration(), gen0+1, "the poller is told again")
	pos, err := f.b.Resume(f.ctx, gen0+1)
	require.NoError(t, err)
	require.Equal(t, inc.RepollFrom, pos.From)
	require.Equal(t, 1.0, testutil.ToFloat64(f.b.loss.m.found.WithLabelValues(LostCheckpoint)))

	// Later, a new loss is a new incident.
	f.clock.Advance(foldWindow)
	require.NoError(t, f.rdb.XGroupDestroy(f.ctx, f.b.StreamKey(), "fwd").Err())
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, 2.0, f.incidents())
	inc, _ = f.b.LastIncident()
	require.EqualValues(t, 2, inc.Number)
	require.Equal(t, []string{LostGroup}, inc.Kinds())
	require.Zero(t, testutil.ToFloat64(f.b.loss.m.found.WithLabelValues(LostCheckpoint)))
}

func TestLossWatermarkWithLogsPushedAhead(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	ctx := f.ctx
	require.NoError(t, f.b.EnsureGroup(ctx, "fwd"))
	now := f.clock.Now()
	behind := func() int64 {
		n, err := f.rdb.ZCard(ctx, f.b.Key("behind")).Result()
		require.NoError(t, err)
		return n
	}

	// Logs pushed in order without a checkpoint (Log Streams) keep the
	// stream in log_id order: nothing behind.
	pushed := page(now.Add(-time.Minute), 10, 3)
	for _, l := range pushed {
		_, err := f.b.Append(ctx, []auth0log.Log{l}, "")
		require.NoError(t, err)
	}
	require.Zero(t, behind())

	// The poller then fetches the logs before them: added after them in
	// the stream, so behind, and the watermark covers them.
	polled := page(now.Add(-2*time.Minute), 0, 5)
	f.appendAll(t, polled)
	require.EqualValues(t, 5, behind())
	at, _ := auth0log.IDTime(polled[0].ID)
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, auth0log.CheckpointAt(at), f.delivered(), "not the first entry's (pushed) second")
	got, err := f.b.Read(ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got[:3])...)) // the pushed ones
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, auth0log.CheckpointAt(at), f.delivered())
	require.NoError(t, f.b.Ack(ctx, "fwd", entryIDs(got[3:])...))
	require.NoError(t, f.b.CheckLoss(ctx))
	require.Equal(t, polled[4].ID, f.delivered(), "all acknowledged: the checkpoint")
	require.Zero(t, behind())
}

// TestAppendBehindFollowsLogIDOrder: the append script tells a log below
// the stream's head (behind) by comparing log_ids as 56-digit numbers in
// groups of 14 digits; a difference in any group decides, the first group
// first, whatever the later groups hold.
func TestAppendBehindFollowsLogIDOrder(t *testing.T) {
	f := newLossFixture(t, testredis.Client(t))
	ctx := f.ctx
	at := time.Now().UTC().Truncate(time.Second)
	// 900, 14 digits of time, 39 of seq: group 1 is 900 and the time to
	// the ten minutes, group 2 the rest of the time and seq's first 11
	// digits, groups 3 and 4 seq's last 28.
	id := func(at time.Time, seq string) string {
		return "900" + at.Format("20060102150405") + strings.Repeat("0", 39-len(seq)) + seq
	}
	one := strings.Repeat("0", 14)
	nines := strings.Repeat("9", 14)
	steps := []struct {
		name   string
		id     string
		behind bool
	}{
		{"first", id(at, "1"+one), false},                      // group 3: 1, group 4: 0
		{"group 3 lower, group 4 higher", id(at, nines), true}, // group 3: 0
		{"group 4 higher", id(at, "1"+one[1:]+"1"), false},     // the head moves
		{"group 2 higher", id(at, "1"+one+one), false},         // seq 10^28
		{"group 2 lower, groups 3 and 4 higher", id(at, nines+nines), true},
		{"group 1 lower (an hour earlier)", id(at.Add(-time.Hour), strings.Repeat("9", 39)), true},
		{"the head again", id(at, "1"+one+one), false}, // dedupe: not added
		{"group 1 higher", id(at.Add(time.Hour), "1"), false},
	}
	want := int64(0)
	for _, s := range steps {
		raw := `{"log_id":"` + s.id + `","date":"` + at.Format(time.RFC3339) + `","type":"s"}`
		l, err := auth0log.Decode([]byte(raw))
		require.NoError(t, err, s.name)
		_, err = f.b.Append(ctx, []auth0log.Log{l}, "")
		require.NoError(t, err, s.name)
		if s.behind {
			want++
		}
		n, err := f.rdb.ZCard(ctx, f.b.Key("behind")).Result()
		require.NoError(t, err)
		require.Equal(t, want, n, s.name)
	}
	head, err := f.rdb.Get(ctx, f.b.Key("head")).Result()
	require.NoError(t, err)
	require.Equal(t, steps[len(steps)-1].id, head)
}
