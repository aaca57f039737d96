package lease

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

func newLease(t *testing.T, c redis.UniversalClient, name, owner string, ttl time.Duration, clock clockwork.Clock) *Lease {
	t.Helper()
	l, err := New(c, Config{Name: name, Owner: owner, TTL: ttl}, Deps{Clock: clock})
	require.NoError(t, err)
	return l
}

func leaseName(t *testing.T) string {
	return "authpipe:{" + testredis.Name(t) + "}:lease:test"
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{Name: "x"}, ""},
		{"no name", Config{}, "lease name: empty"},
		{"ttl too short", Config{Name: "x", TTL: time.Millisecond}, "lease ttl 1ms: want at least 50ms"},
		{"renew not below ttl", Config{Name: "x", TTL: time.Second, RenewEvery: time.Second}, "lease renew interval 1s: want less than the ttl 1s"},
		{"owner line break", Config{Name: "x", Owner: "a\nb"}, "lease owner: contains a line break"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.want)
		})
	}
}

func TestFenceKeySharesSlot(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"authpipe:{t1}:lease:thresholds", "authpipe:{t1}:lease:thresholds:fence"},
		{"plain", "{plain}:fence"},
		{"open{only", "{open{only}:fence"},
		{"empty{}tag", "{empty{}tag}:fence"},
	} {
		got := FenceKey(tc.name)
		require.Equal(t, tc.want, got)
	}
}

func TestAcquireIsExclusiveAndTokensGrow(t *testing.T) {
	c := testredis.Client(t)
	ctx := context.Background()
	name := leaseName(t)
	a := newLease(t, c, name, "a", time.Minute, nil)
	b := newLease(t, c, name, "b", time.Minute, nil)

	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, a.Held())
	tokA := a.Token()
	require.Positive(t, tokA)

	ok, err = b.Acquire(ctx)
	require.NoError(t, err)
	require.False(t, ok, "a second owner must not acquire a held lease")
	require.False(t, b.Held())
	require.Zero(t, b.Token())

	// b cannot renew or release what it does not hold.
	ok, err = b.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, b.Release(ctx))
	require.True(t, a.Held())

	require.NoError(t, a.Release(ctx))
	require.False(t, a.Held())
	ok, err = b.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, b.Token(), tokA, "fencing token must grow from one holder to the next")

	val, err := c.Get(ctx, name).Result()
	require.NoError(t, err)
	require.Equal(t, b.value, val)
}

func TestRenewFailsAfterTakeover(t *testing.T) {
	c := testredis.Client(t)
	ctx := context.Background()
	name := leaseName(t)
	var mu sync.Mutex
	var changes []bool
	a, err := New(c, Config{Name: name, Owner: "a", TTL: time.Minute, OnChange: func(held bool, _ int64) {
		mu.Lock()
		changes = append(changes, held)
		mu.Unlock()
	}}, Deps{})
	require.NoError(t, err)
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	// The key expires (as if a was paused longer than the TTL) and b takes it.
	require.NoError(t, c.Del(ctx, name).Err())
	b := newLease(t, c, name, "b", time.Minute, nil)
	ok, err = b.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	ok, err = a.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok, "compare-and-renew must refuse another holder's lease")
	require.False(t, a.Held())
	require.NoError(t, a.Release(ctx)) // not held: no-op, must not delete b's key
	require.True(t, b.Held())
	n, err := c.Exists(ctx, name).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	mu.Lock()
	require.Equal(t, []bool{true, false}, changes)
	mu.Unlock()
}

func TestHeldEndsWithinTTLOnTheClock(t *testing.T) {
	c := testredis.Client(t)
	ctx := context.Background()
	clock := clockwork.NewFakeClock()
	a := newLease(t, c, leaseName(t), "a", 10*time.Second, clock)
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	clock.Advance(9 * time.Second)
	require.True(t, a.Held())
	require.NoError(t, a.Elector().IsLeader(ctx))
	clock.Advance(time.Second)
	require.False(t, a.Held(), "no renewal for a whole TTL: not held, whatever Redis says")
	require.ErrorIs(t, a.Elector().IsLeader(ctx), ErrNotHeld)
}

func TestKeeperHandsOverOnCancel(t *testing.T) {
	c := testredis.Client(t)
	name := leaseName(t)
	ttl := 600 * time.Millisecond
	a := newLease(t, c, name, "a", ttl, nil)
	b := newLease(t, c, name, "b", ttl, nil)

	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := make(chan struct{})
	go func() { _ = a.Run(ctxA); close(doneA) }()
	require.Eventually(t, a.Held, 2*time.Second, 5*time.Millisecond)

	ctxB, cancelB := context.WithCancel(context.Background())
	defer cancelB()
	doneB := make(chan struct{})
	go func() { _ = b.Run(ctxB); close(doneB) }()

	// Exactly one holds, over several renewals.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		require.True(t, a.Held())
		require.False(t, b.Held())
		time.Sleep(20 * time.Millisecond)
	}

	waitCtx, err := a.Wait(context.Background())
	require.NoError(t, err)
	cancelA()
	<-doneA
	require.False(t, a.Held())
	// Wait's context is cancelled from a context.AfterFunc goroutine.
	require.Eventually(t, func() bool { return waitCtx.Err() != nil }, ttl, time.Millisecond,
		"Wait's context ends when the lease is lost")
	start := time.Now()
	require.Eventually(t, b.Held, ttl, 5*time.Millisecond, "b takes over within one lease period")
	t.Logf("take-over after release: %s", time.Since(start))
	cancelB()
	<-doneB
}

func TestKeeperTakesOverFromCrashedHolder(t *testing.T) {
	name := leaseName(t)
	ttl := 500 * time.Millisecond
	// a has its own client, which we close to cut it off from Redis.
	ca := redis.NewClient(&redis.Options{Addr: testredis.Addr(t), MaxRetries: -1})
	a := newLease(t, ca, name, "a", ttl, nil)
	b := newLease(t, testredis.Client(t), name, "b", ttl, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = a.Run(ctx) }()
	require.Eventually(t, a.Held, 2*time.Second, 5*time.Millisecond)
	wg.Add(1)
	go func() { defer wg.Done(); _ = b.Run(ctx) }()

	work, err := a.Wait(ctx)
	require.NoError(t, err)
	cut := time.Now()
	require.NoError(t, ca.Close())

	// a stops within one lease period of its last renewal, which was at
	// most RenewEvery before the cut.
	require.Eventually(t, func() bool { return !a.Held() && work.Err() != nil }, ttl+50*time.Millisecond, 5*time.Millisecond)
	stopped := time.Since(cut)
	// b gets the lease once the key expired in Redis: within TTL of a's last renewal
	// plus b's retry interval.
	require.Eventually(t, b.Held, ttl+ttl/3+200*time.Millisecond, 5*time.Millisecond)
	t.Logf("a stopped %s after the cut, b holds %s after the cut", stopped, time.Since(cut))
	cancel()
	wg.Wait()
}

func TestWaitBlocksUntilHeld(t *testing.T) {
	c := testredis.Client(t)
	name := leaseName(t)
	a := newLease(t, c, name, "a", time.Second, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := a.Wait(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "no keeper running: never held")

	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(runCtx); close(done) }()
	wctx, err := a.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, wctx.Err())
	require.True(t, a.Held())
	stop()
	<-done
	require.Error(t, wctx.Err())
}

// TestLossReasons: a lost hold says what happened, in LostBecause and in
// the log: taken over by another replica (naming it), expired in Redis, or
// released.
func TestLossReasons(t *testing.T) {
	c := testredis.Client(t)
	ctx := context.Background()
	var logs testlogs.Buffer
	newLogged := func(name, owner string) *Lease {
		l, err := New(c, Config{Name: name, Owner: owner, TTL: time.Minute},
			Deps{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		require.NoError(t, err)
		return l
	}

	name := leaseName(t)
	a, b := newLogged(name, "a"), newLogged(name, "b")
	why, _ := a.LostBecause()
	require.Empty(t, why, "never held, never lost")
	mustAcquire(t, a)
	require.NoError(t, c.Del(ctx, name).Err()) // expired while a was paused
	mustAcquire(t, b)
	ok, err := a.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	why, holder := a.LostBecause()
	require.Equal(t, LossTakenOver, why)
	require.Equal(t, "b", holder)
	require.Contains(t, logs.String(), `"msg":"lease lost: taken over by another replica (ours expired before it was renewed)"`)
	require.Contains(t, logs.String(), `"holder":"b"`)

	name = leaseName(t)
	a = newLogged(name, "a")
	mustAcquire(t, a)
	require.NoError(t, c.Del(ctx, name).Err()) // Redis lost it, nobody took it
	ok, err = a.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	why, holder = a.LostBecause()
	require.Equal(t, LossExpired, why)
	require.Empty(t, holder)
	require.Contains(t, logs.String(), `"msg":"lease lost: its key expired or vanished from Redis before renewal"`)

	mustAcquire(t, a)
	require.NoError(t, a.Release(ctx))
	why, _ = a.LostBecause()
	require.Equal(t, LossReleased, why)
	require.Contains(t, logs.String(), `"msg":"lease released"`)
}

func mustAcquire(t *testing.T, l *Lease) {
	t.Helper()
	ok, err := l.Acquire(context.Background())
	require.NoError(t, err)
	require.True(t, ok)
}

// TestKeeperLogsRedisOutage: while Redis is down the keeper logs its first
// failed renewal, the loss of the lease as an outage (not a fail-over), its
// first failed acquisition and then a summary a minute; when Redis is back,
// one line says so.
func TestKeeperLogsRedisOutage(t *testing.T) {
	srv := testredis.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	clock := clockwork.NewFakeClock()
	var logs testlogs.Buffer
	var mu sync.Mutex
	var lost []Loss
	var l *Lease
	l, err := New(c, Config{Name: leaseName(t), Owner: "a", TTL: 3 * time.Second, OnChange: func(held bool, _ int64) {
		if !held {
			why, _ := l.LostBecause()
			mu.Lock()
			lost = append(lost, why)
			mu.Unlock()
		}
	}}, Deps{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Clock: clock})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	tick := func() {
		t.Helper()
		bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer bcancel()
		require.NoError(t, clock.BlockUntilContext(bctx, 1))
		clock.Advance(time.Second)
	}
	require.Eventually(t, l.Held, 5*time.Second, time.Millisecond)

	srv.Kill()
	for range 150 { // two and a half minutes of renewals, then acquisitions
		tick()
	}
	mu.Lock()
	require.Equal(t, []Loss{LossUnreachable}, lost)
	mu.Unlock()
	count := func(msg string) int { return strings.Count(logs.String(), `"msg":"`+msg+`"`) }
	require.Equal(t, 1, count("renew lease"))
	require.Equal(t, 1, count("lease lost: not renewed within its period because Redis was unreachable"))
	require.Equal(t, 1, count("acquire lease"))
	require.Equal(t, 2, count("acquire lease: still failing"), "a summary a minute")
	require.Zero(t, count("lease keeper reaches Redis again"))

	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool {
		if count("lease keeper reaches Redis again") > 0 {
			return true
		}
		tick()
		return false
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, count("lease keeper reaches Redis again"))
}

func TestTokensNeverGoBackwardsWhenRedisLosesTheCounter(t *testing.T) {
	c := testredis.Client(t)
	ctx := context.Background()
	name := leaseName(t)
	var mu sync.Mutex
	var regress [][2]int64
	a, err := New(c, Config{Name: name, Owner: "a", TTL: time.Minute, OnRegress: func(found, held int64) {
		mu.Lock()
		regress = append(regress, [2]int64{found, held})
		mu.Unlock()
	}}, Deps{})
	require.NoError(t, err)
	for range 3 {
		ok, err := a.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, a.Release(ctx))
	}
	ok, err := a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	held := a.Token()
	require.Empty(t, regress, "no loss, no report")

	// Redis loses the lease and its counter (restart without persistence,
	// FLUSHALL): the holder finds out at its next renewal.
	require.NoError(t, c.Del(ctx, name, FenceKey(name)).Err())
	ok, err = a.Renew(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = a.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, a.Token(), held, "never a token this process held before")
	mu.Lock()
	require.Equal(t, [][2]int64{{0, held}}, regress)
	mu.Unlock()

	// A process that never held the lease starts wherever the counter is.
	require.NoError(t, a.Release(ctx))
	require.NoError(t, c.Del(ctx, FenceKey(name)).Err())
	b := newLease(t, c, name, "b", time.Minute, nil)
	ok, err = b.Acquire(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.EqualValues(t, 1, b.Token())
}
