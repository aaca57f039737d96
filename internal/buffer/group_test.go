package buffer

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestReadAckPending(t *testing.T) {
	tests := []struct {
		name        string
		logs        int
		read        int // count per Read
		ack         []int
		wantPending []int // indexes left pending, in order
	}{
		{name: "ack all", logs: 4, read: 10, ack: []int{0, 1, 2, 3}, wantPending: nil},
		{name: "ack some", logs: 5, read: 10, ack: []int{0, 2, 4}, wantPending: []int{1, 3}},
		{name: "ack none", logs: 3, read: 10, wantPending: []int{0, 1, 2}},
		{name: "read fewer than stored", logs: 5, read: 2, ack: []int{0}, wantPending: []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			logs := page(base, 0, tt.logs)
			f.appendAll(t, logs)
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"), "existing group is fine")

			got, err := f.b.Read(f.ctx, "fwd", "c1", tt.read, 50*time.Millisecond)
			require.NoError(t, err)
			want := min(tt.read, tt.logs)
			require.Len(t, got, want)
			for i, e := range got {
				require.Equal(t, logs[i].ID, e.LogID)
				require.JSONEq(t, string(logs[i].Raw), string(e.Raw))
				require.EqualValues(t, 1, e.Deliveries)
			}
			var acks []string
			for _, i := range tt.ack {
				acks = append(acks, got[i].ID)
			}
			require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "boom"))
			require.NoError(t, f.b.Ack(f.ctx, "fwd", acks...))
			require.EqualValues(t, len(acks), testutil.ToFloat64(f.b.m.stage.Acked))
			if len(acks) > 0 && acks[0] == got[0].ID {
				ok, err := f.rdb.HExists(f.ctx, f.b.Key("reasons"), got[0].ID).Result()
				require.NoError(t, err)
				require.False(t, ok, "ack removes the failure reason")
			}

			// A restarted consumer reads its own pending entries, page by page.
			var again []Entry
			after := "0"
			for {
				es, err := f.b.ReadPending(f.ctx, "fwd", "c1", after, 1)
				require.NoError(t, err)
				if len(es) == 0 {
					break
				}
				again = append(again, es...)
				after = es[len(es)-1].ID
			}
			var wantIDs []string
			for _, i := range tt.wantPending {
				wantIDs = append(wantIDs, got[i].ID)
			}
			require.Equal(t, wantIDs, nilIfEmpty(entryIDs(again)))
			for _, e := range again {
				require.EqualValues(t, 2, e.Deliveries, "reading pending entries delivers them again")
				require.NotEmpty(t, e.Raw)
			}
			// Another consumer's pending list is its own.
			other, err := f.b.ReadPending(f.ctx, "fwd", "c2", "0", 10)
			require.NoError(t, err)
			require.Empty(t, other)

			st, err := f.b.Stats(f.ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, Stats{
				Length:  int64(tt.logs),
				Pending: int64(len(tt.wantPending)),
				Backlog: int64(tt.logs - len(acks)),
			}, st)
		})
	}
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func TestReadBlocks(t *testing.T) {
	f := newFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	for _, block := range []time.Duration{-1, 0, time.Microsecond, 30 * time.Millisecond} {
		got, err := f.b.Read(f.ctx, "fwd", "c1", 10, block)
		require.NoError(t, err, "block %s", block)
		require.Empty(t, got)
	}
	// A blocked read wakes up for an append.
	done := make(chan []Entry, 1)
	go func() {
		es, _ := f.b.Read(f.ctx, "fwd", "c1", 10, 5*time.Second)
		done <- es
	}()
	time.Sleep(50 * time.Millisecond)
	f.appendAll(t, page(base, 0, 2))
	require.Len(t, <-done, 2)

	_, err := f.b.Read(f.ctx, "nogroup", "c1", 10, time.Millisecond)
	require.ErrorContains(t, err, "NOGROUP")
	require.Error(t, f.b.EnsureGroup(f.ctx, ""))
}

func TestTouchKeepsDeliveryCount(t *testing.T) {
	f := newFixture(t, Config{})
	f.appendAll(t, page(base, 0, 3))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, got, 3)

	time.Sleep(300 * time.Millisecond)
	require.NoError(t, f.b.Touch(f.ctx, "fwd", "c1", got[0].ID, got[1].ID))
	require.NoError(t, f.b.Touch(f.ctx, "fwd", "c1")) // nothing to touch

	for _, p := range f.pending(t, "fwd") {
		require.EqualValues(t, 1, p.RetryCount, "touch must not count a delivery")
		require.Equal(t, "c1", p.Consumer)
		if p.ID == got[2].ID {
			require.GreaterOrEqual(t, p.Idle, 300*time.Millisecond, "untouched entry stays idle")
		} else {
			require.Less(t, p.Idle, 250*time.Millisecond, "touch resets idle time")
		}
	}
	// Only the untouched entry is idle long enough to be reclaimed.
	re, err := f.b.Reclaim(f.ctx, "fwd", "c2", 250*time.Millisecond, 10)
	require.NoError(t, err)
	require.Equal(t, []string{got[2].ID}, entryIDs(re))
	require.EqualValues(t, 2, re[0].Deliveries)
}

func TestReclaim(t *testing.T) {
	tests := []struct {
		name          string
		maxDeliveries int
		rounds        int // reclaims after the first read
		noteFailure   string
		wantReturned  []int64 // deliveries of what each reclaim returns (0 = nothing)
		wantReason    string  // dead letter reason, "" = none
	}{
		{name: "reclaimed until acked", maxDeliveries: 5, rounds: 2, wantReturned: []int64{2, 3}},
		{name: "dead-lettered after max deliveries", maxDeliveries: 2, rounds: 2, noteFailure: "segment 503",
			wantReturned: []int64{2, 0}, wantReason: "delivered 2 times without acknowledgement; last error: segment 503"},
		{name: "reason unknown without a noted failure", maxDeliveries: 1, rounds: 1,
			wantReturned: []int64{0}, wantReason: "delivered 1 times without acknowledgement; last error: unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{MaxDeliveries: tt.maxDeliveries})
			logs := page(base, 0, 1)
			f.appendAll(t, logs)
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
			require.NoError(t, err)
			require.Len(t, got, 1)
			if tt.noteFailure != "" {
				require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, tt.noteFailure))
			}

			// Not idle long enough yet: nothing to reclaim.
			re, err := f.b.Reclaim(f.ctx, "fwd", "c2", time.Hour, 10)
			require.NoError(t, err)
			require.Empty(t, re)

			for i, want := range tt.wantReturned {
				time.Sleep(60 * time.Millisecond)
				re, err := f.b.Reclaim(f.ctx, "fwd", "c2", 50*time.Millisecond, 10)
				require.NoError(t, err)
				if want == 0 {
					require.Empty(t, re, "round %d", i)
					continue
				}
				require.Len(t, re, 1, "round %d", i)
				require.Equal(t, got[0].ID, re[0].ID)
				require.Equal(t, logs[0].ID, re[0].LogID)
				require.Equal(t, want, re[0].Deliveries)
				p := f.pending(t, "fwd")
				require.Len(t, p, 1)
				require.Equal(t, "c2", p[0].Consumer, "reclaimed entry changes owner")
			}

			dls, err := f.b.DeadLetters(f.ctx, 10)
			require.NoError(t, err)
			if tt.wantReason == "" {
				require.Empty(t, dls)
				require.Len(t, f.pending(t, "fwd"), 1)
				return
			}
			require.Len(t, dls, 1)
			dl := dls[0]
			require.Equal(t, tt.wantReason, dl.Reason)
			require.Equal(t, got[0].ID, dl.StreamID)
			require.Equal(t, logs[0].ID, dl.LogID)
			require.JSONEq(t, string(logs[0].Raw), string(dl.Raw))
			require.EqualValues(t, tt.maxDeliveries, dl.Deliveries)
			require.WithinDuration(t, f.clock.Now(), dl.FailedAt, time.Millisecond)
			require.Empty(t, f.pending(t, "fwd"), "dead letter leaves the pending list")
			n, err := f.rdb.HLen(f.ctx, f.b.Key("reasons")).Result()
			require.NoError(t, err)
			require.Zero(t, n, "dead letter removes the failure reason")
			require.EqualValues(t, 1, testutil.ToFloat64(f.b.m.deadLetters.WithLabelValues(ReasonMaxDeliveries)))
			require.EqualValues(t, 1, testutil.ToFloat64(f.b.m.stage.Failed))
			st, err := f.b.Stats(f.ctx, "fwd")
			require.NoError(t, err)
			require.Equal(t, Stats{Length: 1, DeadLetters: 1}, st)
		})
	}
}

// TestReclaimWalksPendingList: entries beyond the first XAUTOCLAIM page are
// reached by later calls.
func TestReclaimWalksPendingList(t *testing.T) {
	f := newFixture(t, Config{})
	f.appendAll(t, page(base, 0, 7))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, got, 7)
	time.Sleep(60 * time.Millisecond)
	seen := map[string]bool{}
	for range 5 {
		re, err := f.b.Reclaim(f.ctx, "fwd", "c2", 50*time.Millisecond, 3)
		require.NoError(t, err)
		require.LessOrEqual(t, len(re), 3)
		for _, e := range re {
			seen[e.ID] = true
		}
	}
	require.Len(t, seen, 7)
}

func TestReadPendingDeadLetters(t *testing.T) {
	f := newFixture(t, Config{MaxDeliveries: 1})
	f.appendAll(t, page(base, 0, 3))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.NoError(t, f.b.NoteFailure(f.ctx, got[1].ID, "worker crashed"))

	// After a restart every entry would be its second delivery: all go to
	// dead letters, and the empty result means the pending list is done.
	es, err := f.b.ReadPending(f.ctx, "fwd", "c1", "0", 1)
	require.NoError(t, err)
	require.Empty(t, es)
	dls, err := f.b.DeadLetters(f.ctx, 10)
	require.NoError(t, err)
	require.Len(t, dls, 3)
	require.Equal(t, "delivered 1 times without acknowledgement; last error: worker crashed", dls[1].Reason)
	require.Empty(t, f.pending(t, "fwd"))
}

func TestDeadLetter(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(t *testing.T, f *fixture, e Entry)
		reason   string
		wantErr  string
		wantDLQ  bool
		wantKind string
	}{
		{name: "rejected by segment", reason: Reason(ReasonSegmentRejected, "400 invalid"), wantDLQ: true, wantKind: ReasonSegmentRejected},
		{name: "oversize", reason: "oversize: 40000 bytes", wantDLQ: true, wantKind: ReasonOversize},
		{name: "free text reason", reason: "something odd", wantDLQ: true, wantKind: ReasonOther},
		{
			name:   "already acknowledged: left alone",
			reason: "invalid",
			prepare: func(t *testing.T, f *fixture, e Entry) {
				require.NoError(t, f.b.Ack(f.ctx, "fwd", e.ID))
			},
		},
		{
			name:   "reasons key of the wrong type: nothing moves",
			reason: "invalid",
			prepare: func(t *testing.T, f *fixture, e Entry) {
				require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("reasons"), "x", 0).Err())
			},
			wantErr: "WRONGTYPE reasons",
		},
		{
			name:   "dead-letter key of the wrong type: nothing moves",
			reason: "invalid",
			prepare: func(t *testing.T, f *fixture, e Entry) {
				require.NoError(t, f.rdb.Set(f.ctx, f.b.Key("dlq"), "x", 0).Err())
			},
			wantErr: "WRONGTYPE dead-letter",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			logs := page(base, 0, 2)
			f.appendAll(t, logs)
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 10*time.Millisecond)
			require.NoError(t, err)
			require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "400"))
			if tt.prepare != nil {
				tt.prepare(t, f, got[0])
			}
			pendingBefore := len(f.pending(t, "fwd"))

			err = f.b.DeadLetter(f.ctx, "fwd", Entry{ID: got[0].ID, Deliveries: 1}, tt.reason)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Len(t, f.pending(t, "fwd"), pendingBefore, "entry stays pending")
				if !strings.Contains(tt.wantErr, "dead-letter") {
					n, err := f.rdb.XLen(f.ctx, f.b.Key("dlq")).Result()
					require.NoError(t, err)
					require.Zero(t, n)
				}
				return
			}
			require.NoError(t, err)
			dls, err := f.b.DeadLetters(f.ctx, 10)
			require.NoError(t, err)
			if !tt.wantDLQ {
				require.Empty(t, dls)
				return
			}
			require.Len(t, dls, 1)
			require.Equal(t, tt.reason, dls[0].Reason)
			require.Equal(t, logs[0].ID, dls[0].LogID, "log_id taken from the stream")
			require.JSONEq(t, string(logs[0].Raw), string(dls[0].Raw))
			require.Equal(t, got[0].ID, dls[0].StreamID)
			require.EqualValues(t, 1, dls[0].Deliveries)
			require.Equal(t, []string{got[1].ID}, pendingIDs(f.pending(t, "fwd")))
			ok, err := f.rdb.HExists(f.ctx, f.b.Key("reasons"), got[0].ID).Result()
			require.NoError(t, err)
			require.False(t, ok)
			require.EqualValues(t, 1, testutil.ToFloat64(f.b.m.deadLetters.WithLabelValues(tt.wantKind)))
			// A second call finds it no longer pending.
			require.NoError(t, f.b.DeadLetter(f.ctx, "fwd", got[0], tt.reason))
			dls, err = f.b.DeadLetters(f.ctx, 10)
			require.NoError(t, err)
			require.Len(t, dls, 1)
		})
	}
}

func pendingIDs(ps []redis.XPendingExt) []string {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
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
