package buffer

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBoltResetGroup: a reset group delivers again, after a reopen too,
// the entries appended since the reset time, with an empty pending list and
// an exact backlog; the other groups and trimming keep their contract.
func TestBoltResetGroup(t *testing.T) {
	f := newBoltFixture(t, Config{Retention: time.Hour})
	t0 := f.clock.Now()
	f.appendAll(t, page(base, 0, 5)) // appended at t0
	f.clock.Advance(10 * time.Minute)
	t1 := f.clock.Now()
	f.appendAll(t, page(base, 5, 4)) // appended at t1
	for _, g := range []string{"thr", "fwd"} {
		require.NoError(t, f.b.EnsureGroup(f.ctx, g))
	}
	read := func(group string) []Entry {
		t.Helper()
		es, err := f.b.Read(f.ctx, group, "c", 100, -1)
		require.NoError(t, err)
		return es
	}
	all := read("thr")
	require.Len(t, all, 9)
	require.NoError(t, f.b.Ack(f.ctx, "thr", entryIDs(all[:7])...)) // 2 stay pending
	require.Len(t, read("fwd"), 9)

	require.NoError(t, f.b.Close())
	f.open(t, Config{Retention: time.Hour})

	// From t1: the four newer entries again, nothing pending.
	require.NoError(t, f.b.ResetGroup(f.ctx, "thr", t1))
	st, err := f.b.Stats(f.ctx, "thr")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 9, Backlog: 4}, st)
	es, err := f.b.ReadPending(f.ctx, "thr", "c", "0", 100)
	require.NoError(t, err)
	require.Empty(t, es, "pending list emptied")
	again := read("thr")
	require.Equal(t, entryIDs(all[5:]), entryIDs(again))
	for _, e := range again {
		require.EqualValues(t, 1, e.Deliveries, "a fresh delivery")
	}
	require.NoError(t, f.b.Ack(f.ctx, "thr", entryIDs(again)...))
	st, err = f.b.Stats(f.ctx, "thr")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 9}, st)
	st, err = f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 9, Backlog: 9, Pending: 9}, st, "other groups untouched")

	// The zero time: the whole stream.
	require.NoError(t, f.b.ResetGroup(f.ctx, "thr", time.Time{}))
	require.Equal(t, entryIDs(all), entryIDs(read("thr")))

	// A time before every entry is the whole stream too; one after them,
	// nothing but what is appended later (here at the same clock time, by
	// the rule for ids in the same millisecond).
	require.NoError(t, f.b.ResetGroup(f.ctx, "thr", t0.Add(-time.Hour)))
	require.Len(t, read("thr"), 9)
	require.NoError(t, f.b.ResetGroup(f.ctx, "thr", t1.Add(time.Hour)))
	require.Empty(t, read("thr"))
	st, err = f.b.Stats(f.ctx, "thr")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 9}, st)
	f.appendAll(t, page(base, 9, 1))
	require.Len(t, read("thr"), 1, "entries appended after the reset are delivered")

	// Entries before the reset time (here one still pending) no longer hold
	// back trimming.
	require.NoError(t, f.b.Ack(f.ctx, "fwd", entryIDs(append(all, read("fwd")...))...))
	require.NoError(t, f.b.ResetGroup(f.ctx, "thr", f.clock.Now().Add(time.Millisecond)))
	f.clock.Advance(time.Hour + 5*time.Minute)
	trimmed, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 10, trimmed, "every entry is past retention and no group holds one")

	err = f.b.ResetGroup(f.ctx, "nope", time.Time{})
	require.ErrorContains(t, err, "reset group nope: NOGROUP")
}
