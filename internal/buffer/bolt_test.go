package buffer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
)

type boltFixture struct {
	b     *Bolt
	dir   string
	reg   *prometheus.Registry
	clock *clockwork.FakeClock
	ctx   context.Context
}

func newBoltFixture(t *testing.T, cfg Config) *boltFixture {
	t.Helper()
	f := &boltFixture{dir: t.TempDir(), clock: clockwork.NewFakeClockAt(time.Now()), ctx: t.Context()}
	f.open(t, cfg)
	return f
}

func (f *boltFixture) open(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Tenant == "" {
		cfg.Tenant = "acme"
	}
	f.reg = prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(f.reg, cfg.Tenant)
	b, err := OpenBolt(f.dir, cfg, Deps{Registerer: treg, Clock: f.clock, Stages: metrics.NewStages(treg)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	f.b = b
}

func (f *boltFixture) appendAll(t *testing.T, logs []auth0log.Log) int {
	t.Helper()
	added, err := f.b.Append(f.ctx, logs, logs[len(logs)-1].ID)
	require.NoError(t, err)
	return added
}

// txID is the id of the last committed write transaction.
func (f *boltFixture) txID(t *testing.T) int {
	t.Helper()
	var id int
	require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }))
	return id
}

func TestOpenBoltErrors(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) // runs with "acme" opened and closed in dir before
		dir     func(dir string) string
		cfg     Config
		wantErr string
	}{
		{name: "no data dir", dir: func(string) string { return "" }, cfg: Config{Tenant: "acme"}, wantErr: "open buffer: no data dir"},
		{name: "invalid tenant", cfg: Config{Tenant: "a b"}, wantErr: `buffer tenant "a b"`},
		{name: "invalid retention", cfg: Config{Tenant: "acme", Retention: 5}, wantErr: "buffer retention"},
		{
			name:    "data dir is a file",
			dir:     func(dir string) string { return filepath.Join(dir, boltFileName("acme")) },
			cfg:     Config{Tenant: "acme"},
			wantErr: "create data dir",
		},
		{
			name: "file of another tenant",
			prepare: func(t *testing.T, dir string) {
				data, err := os.ReadFile(filepath.Join(dir, boltFileName("acme")))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, boltFileName("other")), data, 0o600))
			},
			cfg:     Config{Tenant: "other"},
			wantErr: `file has tenant "acme", want "other"`,
		},
		{
			name: "not a bbolt file",
			prepare: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, boltFileName("junk")), []byte(strings.Repeat("junk", 4096)), 0o600))
			},
			cfg:     Config{Tenant: "junk"},
			wantErr: "open buffer file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			b, err := OpenBolt(dir, Config{Tenant: "acme"}, Deps{})
			require.NoError(t, err)
			require.NoError(t, b.Close())
			if tt.prepare != nil {
				tt.prepare(t, dir)
			}
			if tt.dir != nil {
				dir = tt.dir(dir)
			}
			_, err = OpenBolt(dir, tt.cfg, Deps{})
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

// TestBoltLocked: while one buffer has the file open, another cannot (the
// lock is per open file, so this holds within a process as it does across
// processes, see TestKilledMidWrite); once closed, it can. Two tenants share
// a data dir and a registry.
func TestBoltLocked(t *testing.T) {
	f := newBoltFixture(t, Config{})
	start := time.Now()
	_, err := OpenBolt(f.dir, Config{Tenant: "acme"}, Deps{})
	require.ErrorContains(t, err, "open buffer: data dir "+f.dir+" is in use by another authpipe")
	require.GreaterOrEqual(t, time.Since(start), BoltLockTimeout/2)

	other, err := OpenBolt(f.dir, Config{Tenant: "other"}, Deps{Registerer: metrics.Tenant(f.reg, "other")})
	require.NoError(t, err)
	require.NoError(t, other.Close())
	_, err = OpenBolt(t.TempDir(), Config{Tenant: "acme"}, Deps{Registerer: metrics.Tenant(f.reg, "acme")})
	require.ErrorContains(t, err, "register buffer gauges", "the same tenant twice on one registry is an error, not a panic")

	require.NoError(t, f.b.Close())
	require.NoError(t, f.b.Close(), "closing twice is fine")
	again, err := OpenBolt(f.dir, Config{Tenant: "acme"}, Deps{})
	require.NoError(t, err)
	require.NoError(t, again.Close())
	require.Equal(t, filepath.Join(f.dir, "buffer-acme.db"), again.Path())
}

func TestBoltDefaults(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.Equal(t, DefaultRetention, f.b.Config().Retention)
	require.Equal(t, DefaultMaxDeliveries, f.b.Config().MaxDeliveries)
	info, err := os.Stat(f.b.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

// TestBoltReadEnds: a blocked read ends when its context is cancelled or
// the buffer closes; every call after Close fails.
func TestBoltReadEnds(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	for _, how := range []string{"cancel", "close"} {
		ctx, cancel := context.WithCancel(f.ctx)
		errs := make(chan error, 1)
		go func() {
			_, err := f.b.Read(ctx, "fwd", "c", 10, time.Minute)
			errs <- err
		}()
		time.Sleep(20 * time.Millisecond)
		if how == "cancel" {
			cancel()
		} else {
			require.NoError(t, f.b.Close())
		}
		select {
		case err := <-errs:
			require.Error(t, err, how)
		case <-time.After(5 * time.Second):
			t.Fatalf("blocked read did not end on %s", how)
		}
		cancel()
	}
	_, err := f.b.Read(f.ctx, "fwd", "c", 10, -1)
	require.ErrorContains(t, err, "buffer closed")
	_, err = f.b.Append(f.ctx, page(base, 0, 1), "")
	require.ErrorContains(t, err, "buffer closed")
	require.ErrorContains(t, f.b.Ping(f.ctx), "buffer closed")
	require.ErrorContains(t, f.b.NoteFailure(f.ctx, "1-0", "x"), "buffer closed")
	_, err = f.b.Stats(f.ctx, "fwd")
	require.Error(t, err)
	// A scrape after Close does not fail: the gauges keep their last
	// values and authpipe_buffer_up says the buffer did not answer.
	n, err := testutil.GatherAndCount(f.reg, "authpipe_buffer_stream_events", "authpipe_buffer_lost_total")
	require.NoError(t, err)
	require.Equal(t, 2, n, "the gauge is kept, beside the counter")
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP authpipe_buffer_up 1 if the buffer (Redis, or the embedded buffer's file) answered this scrape's statistics query, 0 if it did not.
# TYPE authpipe_buffer_up gauge
authpipe_buffer_up{tenant="`+f.b.Config().Tenant+`"} 0
`), "authpipe_buffer_up"))
}

// TestBoltIDs: entry ids are "<ms>-<seq>" from the buffer's clock, and keep
// ascending when the clock stands still, goes back, or the buffer reopens.
func TestBoltIDs(t *testing.T) {
	f := newBoltFixture(t, Config{})
	now := f.clock.Now().UnixMilli()
	f.appendAll(t, page(base, 0, 3))
	f.clock.Advance(-time.Hour)
	f.appendAll(t, page(base, 3, 1))
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	f.clock.Advance(2 * time.Hour)
	f.appendAll(t, page(base, 4, 1))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "g"))
	es, err := f.b.Read(f.ctx, "g", "c", 10, -1)
	require.NoError(t, err)
	later := f.clock.Now().UnixMilli()
	require.Equal(t, []string{
		fmt.Sprintf("%d-0", now), fmt.Sprintf("%d-1", now), fmt.Sprintf("%d-2", now),
		fmt.Sprintf("%d-3", now), fmt.Sprintf("%d-0", later),
	}, entryIDs(es))

	for _, bad := range []string{"", "x", "1-x", "-1", "1-2-3"} {
		require.Error(t, f.b.Ack(f.ctx, "g", bad), "id %q", bad)
		require.Error(t, f.b.Touch(f.ctx, "g", "c", bad), "id %q", bad)
		_, err := f.b.ReadPending(f.ctx, "g", "c", bad+"x", 1)
		require.Error(t, err, "id %q", bad)
	}
}

// TestBoltLostPendingEntries: entries gone from the stream while pending
// (which Trim never does) are counted as lost on reclaim and on restart
// recovery, and leave the pending list.
func TestBoltLostPendingEntries(t *testing.T) {
	for _, path := range []string{"reclaim", "read pending"} {
		t.Run(path, func(t *testing.T) {
			f := newBoltFixture(t, Config{})
			f.appendAll(t, page(base, 0, 3))
			require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
			got, err := f.b.Read(f.ctx, "fwd", "c1", 10, -1)
			require.NoError(t, err)
			require.NoError(t, f.b.db.Update(func(tx *bbolt.Tx) error {
				for _, e := range got[:2] {
					id, _ := parseID(e.ID)
					if err := tx.Bucket(bktStream).Delete(id.key()); err != nil {
						return err
					}
				}
				return nil
			}))

			var es []Entry
			if path == "reclaim" {
				f.clock.Advance(time.Minute)
				es, err = f.b.Reclaim(f.ctx, "fwd", "c1", time.Second, 10)
			} else {
				es, err = f.b.ReadPending(f.ctx, "fwd", "c1", "0", 10)
			}
			require.NoError(t, err)
			require.Equal(t, []string{got[2].ID}, entryIDs(es))
			require.EqualValues(t, 2, testutil.ToFloat64(f.b.m.lost))
			st, err := f.b.Stats(f.ctx, "fwd")
			require.NoError(t, err)
			require.EqualValues(t, 1, st.Pending, "lost entries leave the pending list")
		})
	}
}

// TestBoltNoEmptyCommits: calls that change nothing commit nothing, so
// they cost no disk sync.
func TestBoltNoEmptyCommits(t *testing.T) {
	f := newBoltFixture(t, Config{})
	logs := page(f.clock.Now().Truncate(time.Second), 0, 3) // within retention
	f.appendAll(t, logs)
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 10, -1)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID))
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the acknowledged entry leaves")
	before := f.txID(t)

	calls := map[string]func() error{
		"duplicate page":         func() error { _, err := f.b.Append(f.ctx, logs, logs[2].ID); return err },
		"existing group":         func() error { return f.b.EnsureGroup(f.ctx, "fwd") },
		"read, nothing new":      func() error { _, err := f.b.Read(f.ctx, "fwd", "c", 10, time.Millisecond); return err },
		"ack again":              func() error { return f.b.Ack(f.ctx, "fwd", got[0].ID) },
		"touch acknowledged":     func() error { return f.b.Touch(f.ctx, "fwd", "c", got[0].ID) },
		"reclaim, nothing idle":  func() error { _, err := f.b.Reclaim(f.ctx, "fwd", "c", time.Hour, 10); return err },
		"dead-letter acked":      func() error { return f.b.DeadLetter(f.ctx, "fwd", got[0], "invalid") },
		"read pending of nobody": func() error { _, err := f.b.ReadPending(f.ctx, "fwd", "x", "0", 10); return err },
		"trim, nothing acked":    func() error { _, err := f.b.Trim(f.ctx); return err },
	}
	for name, call := range calls {
		require.NoError(t, call(), name)
		require.Equal(t, before, f.txID(t), "%s committed", name)
	}
}

// TestBoltNotedFailures: a noted reason is written with the next write
// transaction (or by Close), not by a transaction of its own.
func TestBoltNotedFailures(t *testing.T) {
	f := newBoltFixture(t, Config{})
	f.appendAll(t, page(base, 0, 3))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 10, -1)
	require.NoError(t, err)
	stored := func(id string) string {
		sid, err := parseID(id)
		require.NoError(t, err)
		var r string
		require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
			r = string(tx.Bucket(bktReasons).Get(sid.key()))
			return nil
		}))
		return r
	}
	before := f.txID(t)
	require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "segment 503"))
	require.NoError(t, f.b.NoteFailure(f.ctx, got[1].ID, strings.Repeat("é", 600)))
	require.Equal(t, before, f.txID(t), "noting does not commit")
	require.Empty(t, stored(got[0].ID))

	require.NoError(t, f.b.Touch(f.ctx, "fwd", "c", "1-0")) // not pending: nothing else to write
	require.Equal(t, before+1, f.txID(t))
	require.Equal(t, "segment 503", stored(got[0].ID))
	require.LessOrEqual(t, len(stored(got[1].ID)), maxReasonBytes+len("…"), "reason truncated")

	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID))
	require.Empty(t, stored(got[0].ID), "ack removes the reason")
	require.NoError(t, f.b.NoteFailure(f.ctx, got[2].ID, "timeout"))
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	require.Equal(t, "timeout", stored(got[2].ID), "close writes noted reasons")
}

// TestBoltTrimInChunks: a trim larger than one transaction's worth is
// done in several, each bounded afresh.
func TestBoltTrimInChunks(t *testing.T) {
	f := newBoltFixture(t, Config{Retention: time.Hour})
	n := trimChunk + 7
	at := f.clock.Now().Truncate(time.Second)
	for from := 0; from < n; from += 2000 {
		f.appendAll(t, page(at, from, min(2000, n-from)))
	}
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	all := f.readAll(t, "fwd")
	require.Len(t, all, n)
	keep := all[n-3:]
	require.NoError(t, f.b.Ack(f.ctx, "fwd", entryIDs(all[:n-3])...))

	f.clock.Advance(2 * time.Hour)
	trimmed, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, n-3, trimmed)
	st, err := f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: 3, Backlog: 3, Pending: 3}, st)
	es, err := f.b.ReadPending(f.ctx, "fwd", "c", "0", 10)
	require.NoError(t, err)
	require.Equal(t, entryIDs(keep), entryIDs(es))
	var seen int
	require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
		seen = tx.Bucket(bktSeen).Stats().KeyN
		return nil
	}))
	require.Zero(t, seen, "log_ids past retention forgotten")
}

// TestBoltConcurrent: a poller, a consumer and a reclaimer at once deliver
// every entry and lose none (run with -race).
func TestBoltConcurrent(t *testing.T) {
	f := newBoltFixture(t, Config{})
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	const pages, size = 40, 50
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range pages {
			p := page(base.Add(time.Duration(i)*time.Second), 0, size)
			if _, err := f.b.Append(ctx, p, p[size-1].ID); err != nil {
				t.Error(err)
				return
			}
		}
	})
	var mu sync.Mutex
	got := map[string]int{}
	consume := func(es []Entry) {
		mu.Lock()
		for _, e := range es {
			got[e.LogID]++
		}
		mu.Unlock()
		if len(es) > 0 {
			if err := f.b.Ack(ctx, "fwd", entryIDs(es)...); err != nil {
				t.Error(err)
			}
		}
	}
	for c := range 2 {
		wg.Go(func() {
			for ctx.Err() == nil {
				es, err := f.b.Read(ctx, "fwd", fmt.Sprintf("c%d", c), 30, 50*time.Millisecond)
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				consume(es)
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == pages*size
	}, 20*time.Second, 10*time.Millisecond)
	cancel()
	wg.Wait()
	for id, n := range got {
		require.Equal(t, 1, n, "log %s delivered %d times", id, n)
	}
	st, err := f.b.Stats(f.ctx, "fwd")
	require.NoError(t, err)
	require.Equal(t, Stats{Length: pages * size}, st)
}

// BenchmarkBoltPipeline measures the buffer's share of the end-to-end
// path: pages of 100 appended, read by 100, acknowledged by 500.
func BenchmarkBoltPipeline(b *testing.B) {
	buf, err := OpenBolt(b.TempDir(), Config{Tenant: "bench"}, Deps{})
	require.NoError(b, err)
	defer buf.Close()
	ctx := b.Context()
	require.NoError(b, buf.EnsureGroup(ctx, "fwd"))
	const pageSize = 100
	var pending []string
	b.ResetTimer()
	for i := 0; i < b.N; i += pageSize {
		p := page(base.Add(time.Duration(i/pageSize)*time.Second), 0, pageSize)
		if _, err := buf.Append(ctx, p, p[pageSize-1].ID); err != nil {
			b.Fatal(err)
		}
		es, err := buf.Read(ctx, "fwd", "c", pageSize, -1)
		if err != nil {
			b.Fatal(err)
		}
		pending = append(pending, entryIDs(es)...)
		if len(pending) >= 500 {
			if err := buf.Ack(ctx, "fwd", pending...); err != nil {
				b.Fatal(err)
			}
			pending = pending[:0]
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestBoltTrimStaleReasons: a reason noted after the entry was acknowledged
// goes with the trim, a pending entry's stays.
func TestBoltTrimStaleReasons(t *testing.T) {
	f := newBoltFixture(t, Config{Retention: time.Hour})
	f.appendAll(t, page(f.clock.Now().Truncate(time.Second), 0, 3))
	require.NoError(t, f.b.EnsureGroup(f.ctx, "fwd"))
	got, err := f.b.Read(f.ctx, "fwd", "c", 10, -1)
	require.NoError(t, err)
	require.NoError(t, f.b.Ack(f.ctx, "fwd", got[0].ID, got[1].ID))
	require.NoError(t, f.b.NoteFailure(f.ctx, got[0].ID, "late"))
	require.NoError(t, f.b.NoteFailure(f.ctx, got[2].ID, "pending"))
	f.clock.Advance(2 * time.Hour)
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	var reasons []string
	require.NoError(t, f.b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bktReasons).ForEach(func(k, v []byte) error {
			reasons = append(reasons, mustID(k).String()+"="+string(v))
			return nil
		})
	}))
	require.Equal(t, []string{got[2].ID + "=pending"}, reasons)
}
