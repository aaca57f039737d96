package buffer

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// drain reads and acknowledges everything group has still to deliver.
func (f *boltFixture) drain(t *testing.T, group string) int {
	t.Helper()
	n := 0
	for {
		got, err := f.b.Read(f.ctx, group, "c", 500, -1)
		require.NoError(t, err)
		if len(got) == 0 {
			return n
		}
		require.NoError(t, f.b.Ack(f.ctx, group, entryIDs(got)...))
		n += len(got)
	}
}

// readAll reads everything group has still to deliver, without acknowledging.
func (f *boltFixture) readAll(t *testing.T, group string) []Entry {
	t.Helper()
	var all []Entry
	for {
		es, err := f.b.Read(f.ctx, group, "c", 2000, -1)
		require.NoError(t, err)
		if len(es) == 0 {
			return all
		}
		all = append(all, es...)
	}
}

func (f *boltFixture) fileSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(f.b.Path())
	require.NoError(t, err)
	return fi.Size()
}

// fillBacklog appends n logs (pages of 200) dated at, with a large field so
// that the backlog, not the dedupe record, makes the file's size.
func (f *boltFixture) fillBacklog(t *testing.T, at time.Time, first, n int) []auth0log.Log {
	t.Helper()
	var all []auth0log.Log
	pad := strings.Repeat("x", 2000)
	for p := 0; p < n; p += 200 {
		logs := page(at, first+p, min(200, n-p))
		for i := range logs {
			l, err := auth0log.Decode([]byte(strings.Replace(string(logs[i].Raw), `{`, `{"details":"`+pad+`",`, 1)))
			require.NoError(t, err)
			logs[i] = l
		}
		f.appendAll(t, logs)
		all = append(all, logs...)
	}
	return all
}

// TestBoltCompactsADrainedFile: once a large backlog is delivered and
// trimmed, Trim compacts the file to what is still in use; what the file
// held keeps working afterwards (dedupe record, checkpoint, groups), and a
// reopen does not take the compacted file (whose bbolt transaction ids
// start again) for an older copy.
func TestBoltCompactsADrainedFile(t *testing.T) {
	f := newBoltFixture(t, Config{})
	f.b.compactMin = 1 << 20
	for _, g := range []string{"forward", "thresholds"} {
		require.NoError(t, f.b.EnsureGroup(f.ctx, g))
	}
	at := f.clock.Now().Truncate(time.Second)
	logs := f.fillBacklog(t, at, 0, 3000)
	peak := f.fileSize(t)
	require.Greater(t, peak, int64(4<<20))
	// Record the state beside the file at a high transaction id (Close
	// does), so that a compacted file without counted-on ids would look
	// older at the next open.
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	f.b.compactMin = 1 << 20
	recorded := f.b.recorded.TxID

	require.Equal(t, 3000, f.drain(t, "forward"))
	_, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.Zero(t, testutil.ToFloat64(f.b.compactions), "the threshold group still holds every entry")
	require.Equal(t, peak, f.fileSize(t))

	require.Equal(t, 3000, f.drain(t, "thresholds"))
	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3000, n)
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.compactions))
	after := f.fileSize(t)
	t.Logf("file %d bytes at the peak, %d after the compaction", peak, after)
	require.Less(t, after, peak/4)
	require.GreaterOrEqual(t, f.txID(t)+txBase(t, f), recorded)
	// A crash now (the state file still says the old file's transaction)
	// must not make the next open take the compacted file for an older copy.
	crashed := t.TempDir()
	for _, name := range []string{f.b.Path(), boltStateName(f.b.Path())} {
		data, err := os.ReadFile(name)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(crashed, filepath.Base(name)), data, 0o600))
	}
	g := &boltFixture{dir: crashed, clock: f.clock, ctx: f.ctx}
	g.open(t, Config{})
	require.Zero(t, testutil.ToFloat64(g.b.loss.m.total), "the compacted file taken for an older copy")
	require.NoError(t, g.b.Close())
	require.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP authpipe_buffer_compactions_total Compactions of the embedded buffer's file (copied without its free pages once at least half of it was free).
# TYPE authpipe_buffer_compactions_total counter
authpipe_buffer_compactions_total{tenant="acme"} 1
`), "authpipe_buffer_compactions_total"))
	_, err = os.Stat(compactName(f.b.Path()))
	require.ErrorIs(t, err, os.ErrNotExist, "the copy took the file's place")

	// A second Trim finds nothing to compact.
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.compactions))

	// The compacted file still deduplicates, keeps the checkpoint and the
	// groups' positions, and takes new entries.
	added, err := f.b.Append(f.ctx, logs, logs[len(logs)-1].ID)
	require.NoError(t, err)
	require.Zero(t, added)
	pos, err := f.b.Checkpoint(f.ctx)
	require.NoError(t, err)
	require.Equal(t, logs[len(logs)-1].ID, pos)
	fresh := page(at.Add(time.Second), 5000, 5)
	f.appendAll(t, fresh)
	for _, g := range []string{"forward", "thresholds"} {
		got, err := f.b.Read(f.ctx, g, "c", 100, -1)
		require.NoError(t, err)
		require.Equal(t, logIDs(fresh), entryLogIDs(got), g)
	}

	// Reopened: no lost-file finding, the transaction ids counted on.
	require.NoError(t, f.b.Close())
	f.open(t, Config{})
	require.Zero(t, testutil.ToFloat64(f.b.loss.m.total))
	_, found := f.b.LastIncident()
	require.False(t, found)
}

// txBase is the transaction id the file's ids count on from.
func txBase(t *testing.T, f *boltFixture) int {
	t.Helper()
	var base int
	require.NoError(t, f.b.view(func(tx *bbolt.Tx) error { base = txID(tx) - tx.ID(); return nil }))
	return base
}

// TestBoltCompactWhileWriting: appends, reads and acknowledgements that
// run while the file is compacted wait for it and lose nothing.
func TestBoltCompactWhileWriting(t *testing.T) {
	f := newBoltFixture(t, Config{})
	f.b.compactMin = 1 << 20
	require.NoError(t, f.b.EnsureGroup(f.ctx, "forward"))
	at := f.clock.Now().Truncate(time.Second)
	f.fillBacklog(t, at, 0, 2000)
	require.Equal(t, 2000, f.drain(t, "forward"))

	var wg sync.WaitGroup
	var appended []auth0log.Log
	wg.Go(func() {
		for p := range 20 {
			logs := page(at.Add(time.Second), 10_000+p*10, 10)
			_, err := f.b.Append(f.ctx, logs, logs[9].ID)
			if err != nil {
				t.Errorf("append during compaction: %v", err)
				return
			}
			appended = append(appended, logs...)
		}
	})
	_, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	wg.Wait()
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.compactions))
	require.Equal(t, logIDs(appended), entryLogIDs(f.readAll(t, "forward")))
}

// TestBoltLeftoverCompactionCopy: a copy left by a crash during a
// compaction is removed at the next open; the file is untouched.
func TestBoltLeftoverCompactionCopy(t *testing.T) {
	f := newBoltFixture(t, Config{})
	logs := page(f.clock.Now().Truncate(time.Second), 0, 3)
	f.appendAll(t, logs)
	require.NoError(t, f.b.Close())
	copyName := compactName(f.b.Path())
	require.NoError(t, os.WriteFile(copyName, []byte("half a copy"), 0o600))
	f.open(t, Config{})
	_, err := os.Stat(copyName)
	require.ErrorIs(t, err, os.ErrNotExist)
	added, err := f.b.Append(f.ctx, logs, logs[2].ID)
	require.NoError(t, err)
	require.Zero(t, added)
}

// TestBoltNoCompactionWhileABacklogDrains: a file that is half free pages is
// not compacted while its stream still holds more than compactMaxEntries
// (the copy would copy the backlog), and is once they are delivered.
func TestBoltNoCompactionWhileABacklogDrains(t *testing.T) {
	f := newBoltFixture(t, Config{})
	f.b.compactMin = 1 << 20
	require.NoError(t, f.b.EnsureGroup(f.ctx, "forward"))
	at := f.clock.Now().Truncate(time.Second)
	const n = 3 * compactMaxEntries
	f.fillBacklog(t, at, 0, n)
	acked := 0
	for acked < n-compactMaxEntries-1000 { // reads of 500: stops at 19,000
		got, err := f.b.Read(f.ctx, "forward", "c", 500, -1)
		require.NoError(t, err)
		require.NoError(t, f.b.Ack(f.ctx, "forward", entryIDs(got)...))
		acked += len(got)
	}
	trimmed, err := f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, acked, trimmed)
	require.Zero(t, testutil.ToFloat64(f.b.compactions), "%d entries left in the stream", n-acked)

	f.drain(t, "forward")
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.compactions))
}

// TestBoltFailedCompaction: a compaction that cannot write its copy leaves
// the file as it was and working, does not fail the trim, and is not tried
// again before compactRetry.
func TestBoltFailedCompaction(t *testing.T) {
	f := newBoltFixture(t, Config{})
	f.b.compactMin = 1 << 20
	require.NoError(t, f.b.EnsureGroup(f.ctx, "forward"))
	logs := f.fillBacklog(t, f.clock.Now().Truncate(time.Second), 0, 2000)
	f.drain(t, "forward")
	peak := f.fileSize(t)
	// A directory (not empty) where the copy goes: it cannot be removed or
	// written, as a full or broken disk would refuse the copy.
	blocker := compactName(f.b.Path())
	require.NoError(t, os.MkdirAll(filepath.Join(blocker, "x"), 0o700))

	n, err := f.b.Trim(f.ctx)
	require.NoError(t, err, "the trim itself succeeded")
	require.EqualValues(t, 2000, n)
	require.Zero(t, testutil.ToFloat64(f.b.compactions))
	require.Equal(t, peak, f.fileSize(t))
	added, err := f.b.Append(f.ctx, logs, "")
	require.NoError(t, err)
	require.Zero(t, added, "the file still deduplicates")

	require.NoError(t, os.RemoveAll(blocker))
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.Zero(t, testutil.ToFloat64(f.b.compactions), "tried again before compactRetry")
	f.clock.Advance(compactRetry)
	_, err = f.b.Trim(f.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, testutil.ToFloat64(f.b.compactions))
	require.Less(t, f.fileSize(t), peak)
}

// TestBoltKilledDuringCompaction: a process killed (SIGKILL) at any point of
// a compaction leaves a file that opens, holds every entry, and is not taken
// for an older copy. The child process is this test binary, compacting the
// file again and again until it is killed.
func TestBoltKilledDuringCompaction(t *testing.T) {
	if dir := os.Getenv("AUTHPIPE_TEST_COMPACT_CHILD"); dir != "" {
		f := &boltFixture{dir: dir, clock: clockwork.NewFakeClockAt(time.Now()), ctx: t.Context()}
		f.open(t, Config{})
		fmt.Println("compacting")
		for start := time.Now(); time.Since(start) < time.Minute; { // until killed; a minute if the parent is gone
			if _, _, err := f.b.compact(); err != nil {
				t.Fatalf("compact: %v", err)
			}
		}
		return
	}
	f := newBoltFixture(t, Config{})
	logs := f.fillBacklog(t, f.clock.Now().Truncate(time.Second), 0, 4000)
	require.NoError(t, f.b.Close())
	const rounds = 8
	leftovers, replaced := 0, 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBoltKilledDuringCompaction$", "-test.count=1")
		cmd.Env = append(os.Environ(), "AUTHPIPE_TEST_COMPACT_CHILD="+f.dir)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "child: %s", line)
		require.Equal(t, "compacting\n", line)
		if round < rounds-1 {
			time.Sleep(time.Duration(round*150) * time.Millisecond)
		} else {
			// The last kill comes right after a copy took the file's place.
			path := filepath.Join(f.dir, boltFileName("acme"))
			before, err := os.Stat(path)
			require.NoError(t, err)
			require.Eventually(t, func() bool {
				now, err := os.Stat(path)
				return err == nil && !os.SameFile(before, now)
			}, time.Minute, time.Millisecond)
		}
		require.NoError(t, cmd.Process.Kill())
		_ = cmd.Wait()
		if _, err := os.Stat(compactName(filepath.Join(f.dir, boltFileName("acme")))); err == nil {
			leftovers++
		}

		f.open(t, Config{})
		if txBase(t, f) > 0 {
			replaced++ // a compacted copy had taken the file's place
		}
		require.NoError(t, f.b.EnsureGroup(f.ctx, fmt.Sprint("check", round)))
		require.Equal(t, logIDs(logs), entryLogIDs(f.readAll(t, fmt.Sprint("check", round))), "round %d", round)
		require.Zero(t, testutil.ToFloat64(f.b.loss.m.total), "round %d: the file taken for lost or older", round)
		require.NoError(t, f.b.Close())
	}
	t.Logf("of %d kills, %d left a copy half written, %d came after a copy had replaced the file", rounds, leftovers, replaced)
	require.NotZero(t, replaced, "no kill came after a compaction: the test did not cover a compacted file")
}
