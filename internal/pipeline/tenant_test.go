package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// newLeasedTenant builds a tenant pipeline with a poller lease on b, as
// New does (no forwarder or threshold engine).
func newLeasedTenant(t *testing.T, b *buffer.Redis, consumer string, ttl time.Duration, auth0URL string) (*tenant, fencedBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.Tenant = b.Config().Tenant
	cfg.Buffer.Consumer, cfg.Buffer.LeaseTTL = consumer, ttl
	cfg.Auth0.Domain, cfg.Auth0.ClientID, cfg.Auth0.ClientSecret = auth0URL, "tenant-test", "tenant-test-secret"
	cfg.Auth0.PollInterval, cfg.Auth0.PageSize = 100*time.Millisecond, 50
	tp := &tenant{name: cfg.Tenant, cfg: &cfg, logger: slog.New(slog.DiscardHandler),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "leader"})}
	pb, err := tp.newPollerLease(b)
	require.NoError(t, err)
	if auth0URL != "" {
		reg := prometheus.NewRegistry()
		tp.poller, err = auth0poll.New(PollerConfig(&cfg), pb, auth0poll.Deps{Registerer: reg})
		require.NoError(t, err)
	}
	return tp, pb.(fencedBuffer)
}

// TestFencedBufferStaleLeaderNeverWritesACheckpoint: a poller whose lease
// expired in Redis while it stalled, and was taken over, still believes it
// holds it; its next page is refused inside the append script, nothing of
// it written, and the new holder's writes go through.
func TestFencedBufferStaleLeaderNeverWritesACheckpoint(t *testing.T) {
	rdb := testredis.Client(t)
	ctx := t.Context()
	b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: testredis.Name(t)}, buffer.Deps{})
	require.NoError(t, err)
	old, oldBuf := newLeasedTenant(t, b, "old", time.Minute, "")
	next, nextBuf := newLeasedTenant(t, b, "next", time.Minute, "")

	page := testPage
	at := time.Now().Add(-time.Hour).Truncate(time.Second)

	// Without the lease no checkpoint is written at all.
	p0 := page(at, 2)
	_, err = oldBuf.Append(ctx, p0, p0[1].ID)
	require.ErrorIs(t, err, errNotLeader)
	_, err = oldBuf.Full(ctx)
	require.ErrorIs(t, err, errNotLeader, "a poller without the lease does not poll")

	ok, err := old.lease.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	full, err := oldBuf.Full(ctx)
	require.NoError(t, err)
	require.False(t, full)
	p1 := page(at, 3)
	added, err := oldBuf.Append(ctx, p1, p1[2].ID)
	require.NoError(t, err)
	require.Equal(t, 3, added)

	// The old holder stalls; its key expires in Redis (deleted here, as
	// expiry would) and the next replica takes the lease.
	require.NoError(t, rdb.Del(ctx, pollerLeaseName(b)).Err())
	ok, err = next.lease.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, old.lease.Held(), "the stalled holder has not noticed yet")

	p2 := page(at.Add(time.Minute), 4)
	added, err = oldBuf.Append(ctx, p2, p2[3].ID)
	require.ErrorIs(t, err, buffer.ErrFenced)
	require.Zero(t, added)
	cp, err := b.Checkpoint(ctx)
	require.NoError(t, err)
	require.Equal(t, p1[2].ID, cp, "the stale leader's checkpoint was not written")
	n, err := rdb.XLen(ctx, b.StreamKey()).Result()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "nor its events")

	added, err = nextBuf.Append(ctx, p2, p2[3].ID)
	require.NoError(t, err)
	require.Equal(t, 4, added)

	// Events without a checkpoint (backfill) need no lease.
	p3 := page(at.Add(2*time.Minute), 2)
	added, err = oldBuf.Append(ctx, p3, "")
	require.NoError(t, err)
	require.Equal(t, 2, added)
	cp, err = b.Checkpoint(ctx)
	require.NoError(t, err)
	require.Equal(t, p2[3].ID, cp)
}

// TestPollerLeaseHandover: two replicas' pollers of one tenant; only the
// lease holder polls; when it stops, it releases the lease and the other
// takes over at once (without waiting for the TTL), from the stored
// checkpoint. Every log ends up in the stream once.
func TestPollerLeaseHandover(t *testing.T) {
	auth0 := sim.NewAuth0(sim.Auth0Options{ClientID: "tenant-test", ClientSecret: "tenant-test-secret"})
	srv := httptest.NewServer(auth0)
	t.Cleanup(srv.Close)
	rng := rand.New(rand.NewPCG(5, 5))
	ids := auth0.Add(sim.GenerateEvents(rng, 400, time.Now().Add(-time.Hour), time.Second)...)

	rdb := testredis.Client(t)
	b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: testredis.Name(t)}, buffer.Deps{})
	require.NoError(t, err)
	const ttl = 10 * time.Second // a hand-over must not wait for it
	a, _ := newLeasedTenant(t, b, "replica-a", ttl, srv.URL)
	c, _ := newLeasedTenant(t, b, "replica-c", ttl, srv.URL)

	// Watch that the two never lead at once.
	var both atomic.Bool
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(time.Millisecond):
			}
			if testutil.ToFloat64(a.leader) == 1 && testutil.ToFloat64(c.leader) == 1 {
				both.Store(true)
			}
		}
	}()

	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- a.poll(ctxA) }()
	require.Eventually(t, func() bool { return testutil.ToFloat64(a.leader) == 1 }, 5*time.Second, 5*time.Millisecond)
	ctxC, stopC := context.WithCancel(context.Background())
	doneC := make(chan error, 1)
	go func() { doneC <- c.poll(ctxC) }()
	require.Eventually(t, c.decided.Load, 5*time.Second, 5*time.Millisecond)
	require.True(t, c.ready(), "a follower is ready: another replica polls")
	require.Zero(t, testutil.ToFloat64(c.leader))

	require.Eventually(t, func() bool {
		cp, _ := b.Checkpoint(context.Background())
		return cp >= ids[100]
	}, 20*time.Second, 10*time.Millisecond)
	handover := time.Now()
	stopA()
	require.NoError(t, <-doneA)
	require.Zero(t, testutil.ToFloat64(a.leader))
	require.Eventually(t, func() bool { return testutil.ToFloat64(c.leader) == 1 }, ttl/2, 5*time.Millisecond,
		"the released lease is taken at the next attempt")
	t.Logf("hand-over took %s", time.Since(handover).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		cp, _ := b.Checkpoint(context.Background())
		return cp == ids[len(ids)-1]
	}, 20*time.Second, 10*time.Millisecond)
	stopC()
	require.NoError(t, <-doneC)
	close(stopWatch)
	watch.Wait()
	require.False(t, both.Load(), "two pollers led at once")

	msgs, err := rdb.XRange(context.Background(), b.StreamKey(), "-", "+").Result()
	require.NoError(t, err)
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i], _ = m.Values["id"].(string)
	}
	require.Equal(t, ids, got, "every log once, in order")
}

// testPage returns n logs whose log_ids embed at, ascending.
func testPage(at time.Time, n int) []auth0log.Log {
	logs := make([]auth0log.Log, n)
	for i := range logs {
		id := fmt.Sprintf("900%s%039d", at.UTC().Format("20060102150405"), i)
		raw, _ := json.Marshal(map[string]any{"log_id": id, "date": at.UTC().Format(time.RFC3339), "type": "s"})
		logs[i] = auth0log.Log{ID: id, Date: at.UTC(), Type: "s", Raw: raw}
	}
	return logs
}
