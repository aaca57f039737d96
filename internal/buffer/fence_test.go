package buffer

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/lease"
)

// TestAppendFencedStaleLeaderWritesNothing: the holder of a poller lease
// that expired while it was stalled, and was taken over, can neither add
// events nor move the checkpoint; the new holder can.
func TestAppendFencedStaleLeaderWritesNothing(t *testing.T) {
	f := newFixture(t, Config{})
	name := f.b.Key("lease:poller")
	old, err := lease.New(f.rdb, lease.Config{Name: name, Owner: "old", TTL: 100 * time.Millisecond}, lease.Deps{})
	require.NoError(t, err)
	next, err := lease.New(f.rdb, lease.Config{Name: name, Owner: "new", TTL: time.Minute}, lease.Deps{})
	require.NoError(t, err)

	ok, err := old.Acquire(f.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	oldFence := Fence{Key: lease.FenceKey(name), Token: old.Token()}

	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	first := page(at, 0, 3)
	added, err := f.b.AppendFenced(f.ctx, first, first[2].ID, oldFence)
	require.NoError(t, err)
	require.Equal(t, 3, added)

	// The old holder stalls past its TTL; another process takes over.
	require.Eventually(t, func() bool {
		ok, err := next.Acquire(f.ctx)
		require.NoError(t, err)
		return ok
	}, 5*time.Second, 20*time.Millisecond)
	newFence := Fence{Key: lease.FenceKey(name), Token: next.Token()}
	require.Greater(t, newFence.Token, oldFence.Token)

	// The stale holder resumes with the page it had fetched.
	stale := page(at.Add(time.Minute), 10, 2)
	added, err = f.b.AppendFenced(f.ctx, stale, stale[1].ID, oldFence)
	require.ErrorIs(t, err, ErrFenced)
	require.Zero(t, added)
	cp, err := f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, first[2].ID, cp, "a stale leader never writes a checkpoint")
	n, err := f.rdb.XLen(f.ctx, f.b.StreamKey()).Result()
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "nor events")
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.fenced))

	// The new holder writes the same page.
	added, err = f.b.AppendFenced(f.ctx, stale, stale[1].ID, newFence)
	require.NoError(t, err)
	require.Equal(t, 2, added)
	cp, err = f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, stale[1].ID, cp)
}

func TestAppendFencedRefuses(t *testing.T) {
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	tests := []struct {
		name    string
		fence   func(f *fixture) Fence
		fenced  bool // ErrFenced (else another error)
		counted bool // refused by the script
	}{
		{"no lease ever taken", func(f *fixture) Fence {
			return Fence{Key: f.b.Key("lease:poller:fence"), Token: 1}
		}, true, true},
		{"older token", func(f *fixture) Fence {
			require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("lease:poller:fence"), 7, 0).Err())
			return Fence{Key: f.b.Key("lease:poller:fence"), Token: 6}
		}, true, true},
		{"newer token than issued", func(f *fixture) Fence {
			require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("lease:poller:fence"), 7, 0).Err())
			return Fence{Key: f.b.Key("lease:poller:fence"), Token: 8}
		}, true, true},
		{"no token", func(f *fixture) Fence {
			return Fence{Key: f.b.Key("lease:poller:fence")}
		}, true, false},
		{"key of another tenant", func(f *fixture) Fence {
			return Fence{Key: "authpipe:{other}:lease:poller:fence", Token: 1}
		}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			logs := page(at, 0, 2)
			added, err := f.b.AppendFenced(f.ctx, logs, logs[1].ID, tt.fence(f))
			require.Error(t, err)
			require.Zero(t, added)
			require.Equal(t, tt.fenced, errors.Is(err, ErrFenced), "%v", err)
			cp, err := f.b.Checkpoint(f.ctx)
			require.NoError(t, err)
			require.Empty(t, cp)
			n, err := f.rdb.Exists(f.ctx, f.b.StreamKey(), f.b.Key("seen")).Result()
			require.NoError(t, err)
			require.Zero(t, n, "nothing written")
			want := 0.0
			if tt.counted {
				want = 1
			}
			require.Equal(t, want, testutil.ToFloat64(f.b.fenced))
		})
	}
}

// TestAppendFencedCurrentTokenIsAppend: with the current token, a fenced
// append behaves exactly as Append (dedupe, checkpoint never backwards).
func TestAppendFencedCurrentTokenIsAppend(t *testing.T) {
	f := newFixture(t, Config{})
	key := f.b.Key("lease:poller:fence")
	require.NoError(t, f.rdb.Set(f.ctx, key, 3, 0).Err())
	fence := Fence{Key: key, Token: 3}
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	logs := page(at, 0, 4)
	added, err := f.b.AppendFenced(f.ctx, logs, logs[3].ID, fence)
	require.NoError(t, err)
	require.Equal(t, 4, added)
	added, err = f.b.AppendFenced(f.ctx, logs[:2], logs[1].ID, fence)
	require.NoError(t, err)
	require.Zero(t, added)
	cp, err := f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, logs[3].ID, cp)
	// An empty checkpoint leaves it, as with Append.
	more := page(at.Add(time.Minute), 0, 1)
	added, err = f.b.AppendFenced(f.ctx, more, "", fence)
	require.NoError(t, err)
	require.Equal(t, 1, added)
	cp, err = f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, logs[3].ID, cp)
}
