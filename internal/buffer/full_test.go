package buffer

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Full answers from its last reading of the backlog while that left room
// for what this buffer appended since, for at most fullRecheck; what other
// processes do is seen after that, and an append error or a group created
// here makes it ask again.
func TestFullTrustsItsLastReadingBriefly(t *testing.T) {
	f := newFixture(t, Config{MaxEvents: 10})
	full, err := f.b.Full(f.ctx)
	require.NoError(t, err)
	require.False(t, full)

	// Another process's buffer of the same tenant fills the stream.
	other, err := NewRedis(f.rdb, Config{Tenant: f.b.cfg.Tenant, MaxEvents: 10}, Deps{})
	require.NoError(t, err)
	_, err = other.Append(f.ctx, page(base, 0, 12), "")
	require.NoError(t, err)
	full, err = f.b.Full(f.ctx)
	require.NoError(t, err)
	require.False(t, full, "within fullRecheck the last reading stands")
	f.clock.Advance(fullRecheck)
	full, err = f.b.Full(f.ctx)
	require.NoError(t, err)
	require.True(t, full, "after fullRecheck the backlog is read again")

	// Its own appends count at once.
	g := newFixture(t, Config{MaxEvents: 10})
	full, err = g.b.Full(g.ctx)
	require.NoError(t, err)
	require.False(t, full)
	g.appendAll(t, page(base, 0, 10))
	full, err = g.b.Full(g.ctx)
	require.NoError(t, err)
	require.True(t, full, "no room left by its own appends: read again")

	// A group created here is a new backlog of the whole stream.
	require.NoError(t, g.b.EnsureGroup(g.ctx, "fwd"))
	got, err := g.b.Read(g.ctx, "fwd", "c", 10, 0)
	require.NoError(t, err)
	require.NoError(t, g.b.Ack(g.ctx, "fwd", entryIDs(got)...))
	g.clock.Advance(fullRecheck)
	full, err = g.b.Full(g.ctx)
	require.NoError(t, err)
	require.False(t, full)
	require.NoError(t, g.b.EnsureGroup(g.ctx, "slow"))
	full, err = g.b.Full(g.ctx)
	require.NoError(t, err)
	require.True(t, full, "the new group's backlog is read at once")

	// An append error makes the next Full ask Redis, so that a poller
	// fetches nothing while Redis fails.
	h := newFixture(t, Config{MaxEvents: 10})
	full, err = h.b.Full(h.ctx)
	require.NoError(t, err)
	require.False(t, full)
	require.NoError(t, h.rdb.Set(h.ctx, h.b.stream, "not a stream", 0).Err())
	_, err = h.b.Append(h.ctx, page(base, 0, 1), "")
	require.Error(t, err)
	_, err = h.b.Full(h.ctx)
	require.Error(t, err, "read again after the failed append: the stream key is wrong")
}
