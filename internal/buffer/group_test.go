package buffer

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/buffer/internal/testlog"
)

// Reading, acknowledging, touching, reclaiming and dead-lettering are
// checked on both backends by the conformance suite (conformance_suite_test.go); what
// follows is Redis's own: the scripts' atomicity, the reasons hash, lost
// entries.

// TestDeadLetterAtomic: when the dead-letter script fails, nothing moves.
func TestDeadLetterAtomic(t *testing.T) {
	tests := []struct {
		name    string
		key     string // set to a string: the wrong type
		wantErr string
	}{
		{name: "reasons key of the wrong type", key: "reasons", wantErr: "WRONGTYPE reasons"},
		{name: "dead-letter key of the wrong type", key: "dlq", wantErr: "WRONGTYPE dead-letter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			f.appendAll(t, page(base, 0, 2))
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
			require.NoError(t, err)
			require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "400"))
			require.NoError(t, f.rdb.Set(f.ctx, f.b.Key(tt.key), "x", 0).Err())

			err = f.b.DeadLetter(f.ctx, "fwd", Entry{ID: got[0].ID, Deliveries: 1}, "invalid")
			require.ErrorContains(t, err, tt.wantErr)
			require.Equal(t, entryIDs(got), pendingIDs(f.pending(t, "fwd")), "entry stays pending")
			if tt.key != "dlq" {
				n, err := f.rdb.XLen(f.ctx, f.b.Key("dlq")).Result()
				require.NoError(t, err)
				require.Zero(t, n)
			}
		})
	}
}

// TestFailureReasonsForgotten: the reason noted for an entry leaves the
// reasons hash with the entry: on acknowledgement, on an explicit dead
// letter, and on a dead letter after too many deliveries.
func TestFailureReasonsForgotten(t *testing.T) {
	for _, how := range []string{"ack", "dead letter", "max deliveries"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, Config{MaxDeliveries: 1})
			f.appendAll(t, page(base, 0, 2))
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
			require.NoError(t, err)
			require.Len(t, got, 2)
			require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "400"))
			require.NoError(t, f.b.NoteFailure(f.ctx, got[1].ID, "500"))

			switch how {
			case "ack":
				require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID))
			case "dead letter":
				require.NoError(t, f.b.DeadLetter(f.ctx, "fwd", got[0], Reason(ReasonInvalid, "no type")))
			case "max deliveries":
				require.NoError(t, f.b.Ack(f.ctx, "fwd", got[1].ID))
				time.Sleep(60 * time.Millisecond)
				re, err := f.b.Reclaim(f.ctx, "fwd", "c2", 50*time.Millisecond, 10)
				require.NoError(t, err)
				require.Empty(t, re, "dead-lettered")
			}
			reasons, err := f.rdb.HKeys(f.ctx, f.b.Key("reasons")).Result()
			require.NoError(t, err)
			want := []string{got[1].ID}
			if how == "max deliveries" {
				want = nil
			}
			require.Equal(t, want, nilIfEmpty(reasons))
		})
	}
}

func pendingIDs(ps []redis.XPendingExt) []string {
	return testlog.IDs(ps, func(p redis.XPendingExt) string { return p.ID })
}

// TestLostPendingEntries: entries deleted while pending (what an unsafe
// trim does) are counted as lost on reclaim and on restart recovery.
func TestLostPendingEntries(t *testing.T) {
	for _, path := range []string{"reclaim", "read pending"} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t, Config{})
			f.appendAll(t, page(base, 0, 3))
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
			require.NoError(t, err)
			require.NoError(t, f.rdb.XDel(f.ctx, f.b.StreamKey(), got[0].ID, got[1].ID).Err())

			var es []Entry
			if path == "reclaim" {
				time.Sleep(60 * time.Millisecond)
				es, err = f.b.Reclaim(f.ctx, "fwd", "c1", 50*time.Millisecond, 10)
			} else {
				es, err = f.b.ReadPending(f.ctx, "fwd", "c1", "0", 10)
			}
			require.NoError(t, err)
			require.Equal(t, []string{got[2].ID}, entryIDs(es))
			require.EqualValues(t, 2, testutil.ToFloat64(f.b.m.lost))
			require.Equal(t, []string{got[2].ID}, pendingIDs(f.pending(t, "fwd")), "lost entries leave the pending list")
		})
	}
}
