package buffer

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// TestBoltTrimOnceBothGroupsAcked: the embedded buffer deletes an entry as
// soon as both groups acknowledged it, not before, and a re-poll of the
// delivered window is still deduplicated once the entries are gone.
func TestBoltTrimOnceBothGroupsAcked(t *testing.T) {
	f := newBoltFixture(t, Config{})
	logs := page(f.clock.Now().Truncate(time.Second), 0, 10)
	f.appendAll(t, logs)
	for _, g := range []string{"forward", "thresholds"} {
		require.NoError(t, f.b.EnsureGroup(f.ctx, g))
	}
	fwd, err := f.b.Read(f.ctx, "forward", "c", 10, -1)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "forward", entryIDs(fwd)...))
	thr, err := f.b.Read(f.ctx, "thresholds", "c", 10, -1)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "thresholds", entryIDs(thr[:4])...))
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, n, "the slow threshold group keeps the rest")
	require.NoError(t, f.b.Ack(f.ctx, "thresholds", entryIDs(thr[4:])...))
	n, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 6, n)
	st, err := f.b.Stats(f.ctx, "forward")
	require.NoError(t, err)
	require.Equal(t, Stats{}, st)

	added, err := f.b.Append(f.ctx, logs, logs[9].ID)
	require.NoError(t, err)
	require.Zero(t, added)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Zero(t, testutil.ToFloat64(f.b.loss.m.total))
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP authpipe_buffer_dedupe_entries log_ids in the dedupe record (kept for the retention, after their entries left the stream).
# TYPE authpipe_buffer_dedupe_entries gauge
authpipe_buffer_dedupe_entries{tenant="acme"} 10
`), "authpipe_buffer_dedupe_entries"))

	// The record survives a restart of the process.
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	added, err = f.b.Append(f.ctx, logs, logs[9].ID)
	require.NoError(t, err)
	require.Zero(t, added)
}

// TestBoltDedupeHourBuckets: log_ids are kept packed in the bucket of their
// hour, and Trim drops a whole bucket once its hour has left the retention.
func TestBoltDedupeHourBuckets(t *testing.T) {
	f := newBoltFixture(t, Config{Retention: time.Hour})
	at := f.clock.Now().UTC().Truncate(time.Second)
	logs := append(page(at.Add(-time.Hour), 0, 2), page(at, 5, 3)...)
	_, err := f.b.Append(f.ctx, logs, "")
	require.NoError(t, err)
	hours := map[string]int{}
	require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bktDedupe).ForEachBucket(func(k []byte) error {
			return tx.Bucket(bktDedupe).Bucket(k).ForEach(func(p, _ []byte) error {
				id, err := unpackID(p)
				require.NoError(t, err)
				h, _ := idHour(id)
				require.Equal(t, string(k), h)
				hours[string(k)]++
				return nil
			})
		})
	}))
	require.Equal(t, map[string]int{at.Add(-time.Hour).Format(hourLayout): 2, at.Format(hourLayout): 3}, hours)

	// The earlier hour leaves once its end is an hour (the retention) ago.
	f.clock.Advance(at.Truncate(time.Hour).Add(time.Hour).Sub(at))
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	seen, err := f.b.Seen(f.ctx, logIDs(logs))
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, true, true, true}, seen)
}

// TestBoltPreviousLayoutRecord: a file written before the hour buckets
// keeps deduplicating by its flat seen bucket until that is trimmed empty.
func TestBoltPreviousLayoutRecord(t *testing.T) {
	f := newBoltFixture(t, Config{})
	old := page(f.clock.Now().Add(-time.Minute).Truncate(time.Second), 0, 3)
	require.NoError(t, f.b.db.Update(func(tx *bbolt.Tx) error {
		for _, l := range old {
			if err := tx.Bucket(bktSeen).Put([]byte(l.ID), []byte{}); err != nil {
				return err
			}
		}
		return nil
	}))
	fresh := page(f.clock.Now().Truncate(time.Second), 9, 2)
	added, err := f.b.Append(f.ctx, append(old, fresh...), fresh[1].ID)
	require.NoError(t, err)
	require.Equal(t, 2, added)
	g, err := f.b.gauges(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 5, g.dedupe, "both records counted")
	f.clock.Advance(DefaultRetention + time.Hour)
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	g, err = f.b.gauges(f.ctx)
	require.NoError(t, err)
	require.Zero(t, g.dedupe)
	require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
		require.Zero(t, tx.Bucket(bktSeen).Stats().KeyN)
		require.Zero(t, tx.Bucket(bktDedupe).Stats().BucketN-1, "every hour bucket dropped")
		return nil
	}))
}

// TestBoltFileBounded: with entries deleted once acknowledged and hour
// buckets dropped after the retention, bbolt reuses the freed pages: the
// file stops growing although the traffic goes on.
func TestBoltFileBounded(t *testing.T) {
	f := newBoltFixture(t, Config{Retention: time.Hour})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "forward"))
	size := func() int64 {
		fi, err := os.Stat(f.b.Path())
		require.NoError(t, err)
		return fi.Size()
	}
	var sizes []int64
	for round := range 12 {
		at := f.clock.Now().Truncate(time.Second)
		for p := range 10 {
			f.appendAll(t, page(at, p*200, 200))
			for {
				got, err := f.b.Read(f.ctx, "forward", "c", 500, -1)
				require.NoError(t, err)
				if len(got) == 0 {
					break
				}
				require.NoError(t, f.b.Ack(f.ctx, "forward", entryIDs(got)...))
			}
			_, err := f.b.Trim(f.ctx)
			require.NoError(t, err)
		}
		f.clock.Advance(90 * time.Minute) // this round's hour leaves the retention
		_, err := f.b.Trim(f.ctx)
		require.NoError(t, err)
		sizes = append(sizes, size())
		t.Logf("round %d: file %d bytes", round, sizes[round])
	}
	require.LessOrEqual(t, sizes[11], sizes[3], "the file grew although its content did not: %v", sizes)
}
