package buffer

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// copyFile copies src over dst, as an operator restoring a backup would.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, data, 0o600))
}

// deliverAll appends logs with their checkpoint and has group fwd read and
// acknowledge the first acked of them.
func (f *boltFixture) deliverSome(t *testing.T, logs []auth0log.Log, acked int) {
	t.Helper()
	f.appendAll(t, logs)
	got, err := f.b.Read(f.ctx, "fwd", "c1", len(logs), 0)
	require.NoError(t, err)
	require.Len(t, got, len(logs))
	require.NoError(t, f.b.Ack(f.ctx, "fwd", entryIDs(got[:acked])...))
}

func (f *boltFixture) incidents() float64 { return testutil.ToFloat64(f.b.loss.m.total) }

func TestBoltLossOlderCopy(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	now := f.clock.Now()
	first := page(now.Add(-3*time.Minute), 0, 10)
	f.deliverSome(t, first, 10)
	require.NoError(t, f.b.Close())
	backup := f.b.Path() + ".backup"
	copyFile(t, f.b.Path(), backup)

	f.open(t, Config{})
	require.Zero(t, f.incidents(), "a normal restart")
	second := page(now.Add(-2*time.Minute), 10, 10)
	third := page(now.Add(-time.Minute), 20, 10)
	f.deliverSome(t, second, 10)
	f.deliverSome(t, third, 4) // delivered up to third[3]
	require.NoError(t, f.b.Close())

	// Restored from the older copy while authpipe was stopped.
	copyFile(t, backup, f.b.Path())
	f.open(t, Config{})
	require.Equal(t, 1.0, f.incidents())
	inc, ok := f.b.LastIncident()
	require.True(t, ok)
	require.Equal(t, []string{LostCheckpoint, LostFile}, inc.Kinds())
	require.Contains(t, inc.Found[0].Detail, "older than recorded")
	at, _ := auth0log.IDTime(third[4].ID)
	require.Equal(t, auth0log.CheckpointAt(at), inc.RepollFrom, "the last point known delivered")
	require.Equal(t, third[9].ID, inc.RepollUntil)
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, inc.RepollFrom, pos.From)

	// Stopped again before the re-poll got through: it goes on, not
	// counted again.
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	require.Zero(t, f.incidents())
	pos, err = f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, inc.RepollFrom, pos.From)
	require.NotNil(t, pos.Repoll)
	f.appendAll(t, third[4:])
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	pos, err = f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, third[9].ID, pos.From, "re-poll done: the stored checkpoint")
	require.Nil(t, pos.Repoll)
	require.Zero(t, f.incidents())
}

func TestBoltLossFileGone(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	p := page(f.clock.Now(), 0, 10)
	f.deliverSome(t, p, 6)
	require.NoError(t, f.b.Close())
	require.NoError(t, os.Remove(f.b.Path()))

	f.open(t, Config{})
	require.Equal(t, 1.0, f.incidents())
	inc, _ := f.b.LastIncident()
	require.Equal(t, []string{LostCheckpoint, LostFile}, inc.Kinds())
	require.Contains(t, inc.Found[0].Detail, "was gone")
	at, _ := auth0log.IDTime(p[6].ID)
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, auth0log.CheckpointAt(at), pos.From)
}

func TestBoltLossNotOnFreshOrNormalRestart(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.Zero(t, f.incidents())
	pos, err := f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, Position{}, pos)
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	p := page(f.clock.Now(), 0, 10)
	f.deliverSome(t, p, 3)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.NoError(t, f.b.Close())

	var st boltState
	data, err := os.ReadFile(boltStateName(f.b.Path()))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &st))
	require.Equal(t, p[9].ID, st.Checkpoint)
	at, _ := auth0log.IDTime(p[3].ID)
	require.Equal(t, auth0log.CheckpointAt(at), st.Delivered)
	require.Nil(t, st.Repoll)

	f.open(t, Config{})
	require.Zero(t, f.incidents())
	pos, err = f.b.Resume(f.ctx, 0)
	require.NoError(t, err)
	require.Equal(t, p[9].ID, pos.From)
}

func TestBoltLossBackfillWatermark(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	now := f.clock.Now()
	cur := page(now, 0, 5)
	f.deliverSome(t, cur, 5)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, cur[4].ID, f.b.loss.mem.delivered)
	older := page(now.Add(-time.Hour), 0, 2)
	_, err := f.b.Append(f.ctx, older, "")
	require.NoError(t, err)
	require.NoError(t, f.b.CheckLoss(f.ctx))
	at, _ := auth0log.IDTime(older[0].ID)
	require.Equal(t, auth0log.CheckpointAt(at), f.b.loss.mem.delivered)
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", entryIDs(got)...))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	require.Equal(t, cur[4].ID, f.b.loss.mem.delivered)
}

func TestBoltLossWatermarkWithLogsPushedAhead(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	now := f.clock.Now()
	behind := func() int {
		n := 0
		require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
			n = tx.Bucket(bktBehind).Stats().KeyN
			return nil
		}))
		return n
	}
	for _, l := range page(now.Add(-time.Minute), 10, 3) {
		_, err := f.b.Append(f.ctx, []auth0log.Log{l}, "")
		require.NoError(t, err)
	}
	require.Zero(t, behind(), "in order: nothing behind")
	polled := page(now.Add(-2*time.Minute), 0, 5)
	f.appendAll(t, polled)
	require.Equal(t, 5, behind())
	got, err := f.b.Read(f.ctx, "fwd", "c1", 10, 0)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", entryIDs(got[:3])...))
	require.NoError(t, f.b.CheckLoss(f.ctx))
	at, _ := auth0log.IDTime(polled[0].ID)
	require.Equal(t, auth0log.CheckpointAt(at), f.b.loss.mem.delivered)
}
