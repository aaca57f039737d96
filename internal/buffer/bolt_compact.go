package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

const (
	// CompactMinBytes is the smallest buffer file Trim compacts: below it,
	// the disk a file keeps after a drained backlog is not worth a copy.
	CompactMinBytes = 16 << 20
	// compactTxBytes bounds one transaction of the copy (bbolt.Compact):
	// a transaction holds its pages on the heap, about twice their size
	// (64 MiB transactions measured 128 MB of heap).
	compactTxBytes = 4 << 20
	// compactMaxEntries: a file is compacted only while its stream holds
	// at most this many entries. A compaction copies them, and during a
	// catch-up it would copy the draining backlog again and again (measured:
	// +28 % worker CPU and +45 MB peak RSS); the file is compacted once the
	// backlog has drained instead.
	compactMaxEntries = 10_000
	// compactRelease is how often the pages of the file being copied are
	// released from the process while the copy reads them (residentFile).
	compactRelease = 50 * time.Millisecond
	// compactRetry is how long a failed compaction waits to be tried again.
	compactRetry = 10 * time.Minute
)

// bkeyTxBase (meta) is the last transaction id of the file a compaction
// copied from: the copy's own ids start again at 1, and the state file
// beside the buffer compares transaction ids to tell an older copy of the
// file (see openLoss), so ids count on from it.
var bkeyTxBase = []byte("txbase")

// txID is the file's last committed transaction as the state file records
// it: tx.ID() counted on from the compactions before.
func txID(tx *bbolt.Tx) int {
	base := 0
	if v := tx.Bucket(bktMeta).Get(bkeyTxBase); len(v) == 8 {
		base = int(binary.BigEndian.Uint64(v))
	}
	return base + tx.ID()
}

// compactName is the file a compaction writes before it replaces path.
func compactName(path string) string { return path + ".compact" }

// compactDue reports whether the file should be compacted: bbolt reuses
// freed pages but never shrinks its file, so after a large backlog is
// delivered and trimmed the file keeps the backlog's peak size. It is due
// once the stream holds at most compactMaxEntries, the file is at least
// CompactMinBytes and at least half of it is free pages: the file then
// stays within twice what it holds, and each compaction at least halves it.
func (b *Bolt) compactDue() (bool, error) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.isClosed() {
		return false, errClosed
	}
	var size, entries, inUse int64
	if err := b.db.View(func(tx *bbolt.Tx) error {
		size, entries = tx.Size(), getCount(tx.Bucket(bktMeta), bkeyLength)
		// Info reads the mapping, which a commit may move: only a read
		// transaction holds it in place.
		st := b.db.Stats()
		inUse = size - int64(st.FreePageN+st.PendingPageN)*int64(b.db.Info().PageSize)
		return nil
	}); err != nil {
		return false, err
	}
	return entries <= compactMaxEntries && size >= b.compactMin && inUse <= size/2, nil
}

// compact copies the file's buckets into a new file, without the free
// pages, and puts the copy in its place. Every other use of the file waits
// meanwhile (dbMu); the copy takes about a second per hundred megabytes in
// use. The copy is written beside the file, synced, and renamed over it
// while both are open and locked, so no other process can open either in
// between and a crash at any point leaves one complete file: the old one
// (a leftover copy is removed at the next open) or the new one.
func (b *Bolt) compact() (before, after int64, err error) {
	b.dbMu.Lock()
	defer b.dbMu.Unlock()
	if b.isClosed() {
		return 0, 0, errClosed
	}
	tmp := compactName(b.path)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, 0, fmt.Errorf("compact buffer file: remove leftover copy: %w", err)
	}
	var base int
	if err := b.db.View(func(tx *bbolt.Tx) error {
		before, base = tx.Size(), txID(tx)
		return nil
	}); err != nil {
		return 0, 0, fmt.Errorf("compact buffer file: %w", err)
	}
	dst, err := bbolt.Open(tmp, 0o600, boltOptions())
	if err != nil {
		return 0, 0, fmt.Errorf("compact buffer file: create copy: %w", err)
	}
	abandon := func(err error) (int64, int64, error) {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return 0, 0, fmt.Errorf("compact buffer file: %w", err)
	}
	// The copy reads every page in use through the file's mapping: release
	// them as it goes, or all of them would count in the process's RSS.
	stop, released := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(released)
		tick := b.clock.NewTicker(compactRelease)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.Chan():
				b.resident.release(b.db)
			}
		}
	}()
	err = bbolt.Compact(dst, b.db, compactTxBytes)
	close(stop)
	<-released
	if err != nil {
		return abandon(err)
	}
	if err := dst.Update(func(tx *bbolt.Tx) error {
		after = tx.Size()
		return tx.Bucket(bktMeta).Put(bkeyTxBase, binary.BigEndian.AppendUint64(nil, uint64(base)))
	}); err != nil {
		return abandon(err)
	}
	if err := os.Rename(tmp, b.path); err != nil {
		return abandon(err)
	}
	// The rename must be on disk before anything is written to the copy:
	// otherwise a crash could bring back the old file without those writes.
	if err := syncDir(filepath.Dir(b.path)); err != nil {
		b.log.Error("sync data dir after compacting the buffer file", "err", err)
	}
	old := b.db
	b.db = dst
	if err := old.Close(); err != nil {
		b.log.Warn("close the buffer file replaced by its compacted copy", "err", err)
	}
	b.resident.release(dst) // the copy's writes mapped its pages
	return before, after, nil
}

// maybeCompact compacts the file when compactDue says so, and reports it.
// A failed compaction (a full disk, most likely) leaves the file as it was;
// it is logged, and not tried again for compactRetry: each try writes up to
// the file's content. It is not Trim's failure: the trim itself is done.
func (b *Bolt) maybeCompact() error {
	now := b.clock.Now()
	b.mu.Lock()
	retryAt := b.compactRetryAt
	b.mu.Unlock()
	if now.Before(retryAt) {
		return nil
	}
	due, err := b.compactDue()
	if err != nil || !due {
		return err
	}
	before, after, err := b.compact()
	if err != nil {
		b.mu.Lock()
		b.compactRetryAt = now.Add(compactRetry)
		b.mu.Unlock()
		b.log.Warn("cannot compact the buffer file; it keeps its size (bbolt reuses its free pages)",
			"err", err, "retry_in", compactRetry)
		return nil
	}
	b.compactions.Inc()
	b.log.Info("buffer file compacted", "bytes_before", before, "bytes_after", after,
		"duration", b.clock.Since(now).Round(time.Millisecond))
	return nil
}

// syncDir makes the entries of dir (a rename) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// boltOptions are the options of every buffer file.
func boltOptions() *bbolt.Options {
	return &bbolt.Options{
		Timeout: BoltLockTimeout,
		// The freelist is rebuilt on open instead of written on every
		// commit (etcd's setting); it does not affect durability.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
}
