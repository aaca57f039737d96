package buffer

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/testredis"
)

func startServer(t *testing.T) *testredis.Server { return testredis.Start(t) }

func clientOf(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr: addr, ContextTimeoutEnabled: true,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: 1, MinRetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisKillRestart: pages and their checkpoints survive a Redis crash
// together, and the same client carries on once Redis is back.
func TestRedisKillRestart(t *testing.T) {
	srv := startServer(t)
	f := newFixtureOn(t, clientOf(t, srv.Addr), Config{Tenant: "acme"})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))

	pages := [][]auth0log.Log{page(base, 0, 3), page(base.Add(time.Second), 0, 4)}
	for _, p := range pages {
		f.appendAll(t, p)
	}
	got, err := f.b.Read(f.ctx, "fwd", "c", 2, 10*time.Millisecond)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID))
	time.Sleep(1100 * time.Millisecond) // appendfsync everysec

	srv.Kill()
	_, err = f.b.Append(f.ctx, page(base.Add(2*time.Second), 0, 1), "")
	require.Error(t, err, "redis is down")
	require.NoError(t, srv.Restart())

	// The client reconnects; the script cache is empty after the restart
	// (EVALSHA falls back to EVAL).
	require.Eventually(t, func() bool { return f.b.Ping(f.ctx) == nil }, 5*time.Second, 20*time.Millisecond)
	cp, err := f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, pages[1][3].ID, cp)
	require.Equal(t, append(logIDs(pages[0]), logIDs(pages[1])...), f.streamLogIDs(t))
	// Group state survived: one entry pending, five undelivered. Redis 7.0
	// forgets the group's lag on restart (see backlog), so the backlog is
	// the stream length until the group has read to the end.
	st, err := f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 7, Backlog: 7, Pending: 1}, st)
	added, err := f.b.Append(f.ctx, pages[1], pages[1][3].ID)
	require.NoError(t, err)
	require.Zero(t, added, "dedupe survived")
	next := page(base.Add(3*time.Second), 0, 2)
	added, err = f.b.Append(f.ctx, next, next[1].ID)
	require.NoError(t, err)
	require.Equal(t, 2, added)
	es, err := f.b.ReadPending(f.ctx, "fwd", "c", "0", 10)
	require.NoError(t, err)
	require.Equal(t, []string{got[1].ID}, entryIDs(es))

	rest, err := f.b.Read(f.ctx, "fwd", "c", 100, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, rest, 7, "five undelivered before the crash, two after")
	require.NoError(t, f.b.Ack(f.ctx, "fwd", append(entryIDs(es), entryIDs(rest)...)...))
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 9, Backlog: 0, Pending: 0}, st, "lag known again once caught up")
}

// TestRedisKillMidStream: Redis is killed while pages are being appended.
// Whatever survived, the checkpoint and the stored pages agree: every log
// up to the checkpoint is stored, none after it.
func TestRedisKillMidStream(t *testing.T) {
	srv := startServer(t)
	f := newFixtureOn(t, clientOf(t, srv.Addr), Config{Tenant: "acme"})

	var (
		mu    sync.Mutex
		pages [][]auth0log.Log
	)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil && i < 5000; i++ {
			p := page(base.Add(time.Duration(i)*time.Second), 0, 5)
			mu.Lock()
			pages = append(pages, p)
			mu.Unlock()
			if _, err := f.b.Append(ctx, p, p[4].ID); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	srv.Kill()
	<-done
	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool { return f.b.Ping(f.ctx) == nil }, 5*time.Second, 20*time.Millisecond)

	cp, err := f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.NotEmpty(t, cp, "some pages were stored before the kill")
	var want []string
	mu.Lock()
	for _, p := range pages {
		for _, l := range p {
			if l.ID <= cp {
				want = append(want, l.ID)
			}
		}
	}
	mu.Unlock()
	stored := f.streamLogIDs(t)
	require.Equal(t, want, stored)
	seen, err := f.b.dedupeEntries(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, len(want), seen)
	t.Logf("%d pages offered, %d logs stored up to the checkpoint", len(pages), len(stored))
}
