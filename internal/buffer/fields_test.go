package buffer

import (
	"bytes"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Entries written before the parsed fields were stored hold only the
// log_id and the raw event; they still read, decoded once from raw.

func TestRedisReadsEntriesWithoutFields(t *testing.T) {
	f := newFixture(t, Config{})
	logs := page(base, 0, 3)
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	for _, l := range logs { // as the previous version's append script wrote them
		require.NoError(t, f.rdb.XAdd(f.ctx, &redis.XAddArgs{
			Stream: f.b.StreamKey(), Values: []any{"id", l.ID, "raw", []byte(l.Raw)},
		}).Err())
	}
	f.appendAll(t, page(base, 3, 1)) // and one written now, with its fields
	got, err := f.b.Read(f.ctx, "fwd", "c", 10, 10*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, got, 4)
	requireLogs(t, append(logs, page(base, 3, 1)...), got)
	for i, e := range got {
		require.Equal(t, i == 3, e.fields != nil, "entry %d", i)
	}

	t.Run("an entry whose event is not its log_id's is an error", func(t *testing.T) {
		other := page(base, 9, 1)[0]
		require.NoError(t, f.rdb.XAdd(f.ctx, &redis.XAddArgs{
			Stream: f.b.StreamKey(), Values: []any{"id", other.ID, "raw", []byte(logs[0].Raw)},
		}).Err())
		got, err := f.b.Read(f.ctx, "fwd", "c", 10, 10*time.Millisecond)
		require.NoError(t, err)
		require.Len(t, got, 1)
		_, err = got[0].Log()
		require.ErrorContains(t, err, "stored under log_id "+other.ID)
	})
}

func TestBoltReadsEntriesWithoutFields(t *testing.T) {
	b := newBoltFixture(t, Config{}).b
	ctx := t.Context()
	logs := page(base, 0, 3)
	_, err := b.Append(ctx, logs, logs[2].ID)
	require.NoError(t, err)
	// Rewrite the first two entries as the previous version stored them:
	// len(log_id) | log_id | raw.
	require.NoError(t, b.db.Update(func(tx *bbolt.Tx) error {
		var keys [][]byte
		c := tx.Bucket(bktStream).Cursor()
		for k, _ := c.First(); k != nil && len(keys) < 2; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for i, k := range keys {
			old := append([]byte{byte(len(logs[i].ID))}, logs[i].ID...)
			if err := tx.Bucket(bktStream).Put(k, append(old, logs[i].Raw...)); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, b.EnsureGroup(ctx, "fwd"))
	got, err := b.Read(ctx, "fwd", "c", 10, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	requireLogs(t, logs, got)
	require.Nil(t, got[0].fields)
	require.Nil(t, got[1].fields)
	require.NotNil(t, got[2].fields)
}

// requireLogs checks that each entry gives the log appended for it.
func requireLogs(t *testing.T, want []auth0log.Log, got []Entry) {
	t.Helper()
	require.Len(t, got, len(want))
	for i, e := range got {
		l, err := e.Log()
		require.NoError(t, err)
		require.Equal(t, want[i], l, "entry %d", i)
	}
}
