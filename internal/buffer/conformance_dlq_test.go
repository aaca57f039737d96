package buffer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/buffer/internal/testlog"
)

// deadLettered opens a backend holding n logs, all of them read by group
// "fwd" and dead-lettered (reason "invalid: <i>"), and a second group "thr"
// that has read and acknowledged everything. It returns the logs and the
// dead letters, oldest first.
func deadLettered(t *testing.T, h *Harness, n int) (Backend, []auth0log.Log, []buffer.DeadLetter) {
	t.Helper()
	b := h.Open(t, buffer.Config{})
	ctx := t.Context()
	logs := Page(Base, 0, n)
	appendAll(t, b, logs)
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	require.NoError(t, b.EnsureGroup(ctx, "thr"))
	got, err := b.Read(ctx, "fwd", "c1", n, -1)
	require.NoError(t, err)
	require.Len(t, got, n)
	for i, e := range got {
		require.NoError(t, b.DeadLetter(ctx, "fwd", e, buffer.Reason(buffer.ReasonInvalid, fmt.Sprint(i))))
	}
	thr, err := b.Read(ctx, "thr", "c1", n, -1)
	require.NoError(t, err)
	require.NoError(t, b.Ack(ctx, "thr", EntryIDs(thr)...))
	dls, err := b.DeadLetters(ctx, 100)
	require.NoError(t, err)
	require.Len(t, dls, n)
	return b, logs, dls
}

func dlqIDs(dls []buffer.DeadLetter) []string {
	return testlog.IDs(dls, func(d buffer.DeadLetter) string { return d.ID })
}

func dlqLogIDs(dls []buffer.DeadLetter) []string {
	return testlog.IDs(dls, func(d buffer.DeadLetter) string { return d.LogID })
}

func testDeadLettersPaging(t *testing.T, h *Harness) {
	b, logs, all := deadLettered(t, h, 5)
	ctx := t.Context()
	require.Equal(t, LogIDs(logs), dlqLogIDs(all))

	var paged []buffer.DeadLetter
	after := ""
	for range 10 {
		page, err := b.DeadLettersAfter(ctx, after, 2)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 2)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, all, paged, "pages join up, oldest first, nothing twice")

	rest, err := b.DeadLettersAfter(ctx, all[2].ID, 0)
	require.NoError(t, err)
	require.Equal(t, all[3:], rest, "count 0 is the default page")
	_, err = b.DeadLettersAfter(ctx, "not-an-id", 2)
	require.Error(t, err)
}

func testReplayDeadLetters(t *testing.T, h *Harness) {
	tests := []struct {
		name      string
		ids       func(dls []buffer.DeadLetter) []string
		want      []int // indexes of the dead letters replayed, in order
		wantError bool
	}{
		{name: "one by id", ids: func(d []buffer.DeadLetter) []string { return []string{d[1].ID} }, want: []int{1}},
		{name: "several, unknown and repeated ids skipped", ids: func(d []buffer.DeadLetter) []string {
			return []string{d[2].ID, "1-0", d[0].ID, d[2].ID}
		}, want: []int{2, 0}},
		{name: "all", ids: func([]buffer.DeadLetter) []string { return nil }, want: []int{0, 1, 2, 3}},
		{name: "invalid id changes nothing", ids: func(d []buffer.DeadLetter) []string {
			return []string{d[0].ID, "12"}
		}, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, logs, dls := deadLettered(t, h, 4)
			ctx := t.Context()
			before, err := b.Stats(ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, buffer.Stats{Length: 4, DeadLetters: 4}, before)
			h.Clock.Advance(time.Second)

			n, err := b.ReplayDeadLetters(ctx, tt.ids(dls))
			if tt.wantError {
				require.Error(t, err)
				require.Zero(t, n)
				after, err := b.DeadLetters(ctx, 100)
				require.NoError(t, err)
				require.Equal(t, dls, after)
				es, err := b.Read(ctx, "fwd", "c1", 100, -1)
				require.NoError(t, err)
				require.Empty(t, es)
				return
			}
			require.NoError(t, err)
			require.Equal(t, len(tt.want), n)

			// Gone from the dead letters, the others kept.
			left, err := b.DeadLetters(ctx, 100)
			require.NoError(t, err)
			var wantLeft []buffer.DeadLetter
			for i, d := range dls {
				if !contains(tt.want, i) {
					wantLeft = append(wantLeft, d)
				}
			}
			require.Equal(t, wantLeft, nilIfNoDL(left))

			// Back in the stream as new entries, with their log_id and raw
			// event, delivered to every group, in the order replayed.
			for _, g := range []string{"fwd", "thr"} {
				es, err := b.Read(ctx, g, "c2", 100, -1)
				require.NoError(t, err)
				require.Len(t, es, len(tt.want), "group %s", g)
				for j, i := range tt.want {
					require.Equal(t, logs[i].ID, es[j].LogID)
					require.JSONEq(t, string(logs[i].Raw), string(es[j].Raw))
					require.EqualValues(t, 1, es[j].Deliveries)
					require.True(t, idLess(dls[len(dls)-1].StreamID, es[j].ID), "a new entry after the old ones")
				}
				require.NoError(t, b.Ack(ctx, g, EntryIDs(es)...))
			}
			st, err := b.Stats(ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, buffer.Stats{Length: int64(4 + n), DeadLetters: int64(4 - n)}, st)
			require.EqualValues(t, n, h.Counter(t, "authpipe_dead_letters_replayed_total"))
			require.EqualValues(t, 0, h.Counter(t, "authpipe_dead_letters_dropped_total"))

			// Nothing left to replay twice.
			again, err := b.ReplayDeadLetters(ctx, dlqIDs(dls))
			require.NoError(t, err)
			require.Equal(t, 4-n, again, "only those still dead-lettered")

			// Survives a restart.
			h.Reopen(t)
			st, err = h.B.Stats(ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, buffer.Stats{Length: 8, Backlog: int64(4 - n), DeadLetters: 0}, st)
		})
	}
}

// testReplayEmpty: an empty dead-letter stream replays and drops nothing,
// without error.
func testReplayEmpty(t *testing.T, h *Harness) {
	b := h.Open(t, buffer.Config{})
	n, err := b.ReplayDeadLetters(t.Context(), nil)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = b.DropDeadLetters(t.Context(), nil)
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = b.ReplayDeadLetters(t.Context(), []string{"1-1"})
	require.NoError(t, err)
	require.Zero(t, n)
}

func testDropDeadLetters(t *testing.T, h *Harness) {
	b, _, dls := deadLettered(t, h, 4)
	ctx := t.Context()

	n, err := b.DropDeadLetters(ctx, []string{dls[1].ID, "1-0"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	left, err := b.DeadLetters(ctx, 100)
	require.NoError(t, err)
	require.Equal(t, []buffer.DeadLetter{dls[0], dls[2], dls[3]}, left)

	_, err = b.DropDeadLetters(ctx, []string{"x"})
	require.Error(t, err)

	n, err = b.DropDeadLetters(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	left, err = b.DeadLetters(ctx, 100)
	require.NoError(t, err)
	require.Empty(t, left)

	// Nothing comes back to the stream.
	es, err := b.Read(ctx, "fwd", "c1", 100, -1)
	require.NoError(t, err)
	require.Empty(t, es)
	st, err := b.Stats(ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, buffer.Stats{Length: 4}, st)
	require.EqualValues(t, 4, h.Counter(t, "authpipe_dead_letters_dropped_total"))
	require.EqualValues(t, 0, h.Counter(t, "authpipe_dead_letters_replayed_total"))

	h.Reopen(t)
	left, err = h.B.DeadLetters(ctx, 100)
	require.NoError(t, err)
	require.Empty(t, left)
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func nilIfNoDL(d []buffer.DeadLetter) []buffer.DeadLetter {
	if len(d) == 0 {
		return nil
	}
	return d
}
