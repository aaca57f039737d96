package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const (
	// BoltLockTimeout is how long OpenBolt waits for the lock on the
	// buffer file before reporting the data dir as in use.
	BoltLockTimeout = time.Second
	// trimChunk bounds the deletions of one trim transaction, so that
	// trimming a large backlog never holds the write lock for long.
	trimChunk = 10_000
)

// errNoChange rolls back a write transaction that found nothing to do:
// bbolt syncs on every commit, even an empty one.
var errNoChange = errors.New("no change")

// errClosed is returned by every call after Close.
var errClosed = errors.New("buffer closed")

// Bolt is the embedded backend of one tenant's buffer: a bbolt file in a
// data dir, locked by the process that opened it. It has the method set
// and semantics of Redis for everything the poller and the forwarder use;
// see the package doc for its guarantee. It is safe for concurrent use.
type Bolt struct {
	// dbMu guards db: a compaction (bolt_compact.go) replaces it while
	// holding dbMu; every transaction holds it for reading.
	dbMu  sync.RWMutex
	db    *bbolt.DB
	path  string
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock
	m     *bufferMetrics

	compactions    prometheus.Counter
	compactMin     int64     // CompactMinBytes; tests lower it
	compactRetryAt time.Time // no compaction before (after a failed one); under mu

	closeOnce sync.Once
	closed    chan struct{}

	mu      sync.Mutex
	cursors map[string]streamID // group → Reclaim cursor
	notes   map[streamID]string // failure reasons not yet written
	wake    chan struct{}       // closed (and replaced) when entries are added

	resident residentFile // bounds the mapped file pages kept resident

	loss          *lossWatch
	recorded      *boltState // the state file as last written (under loss.checkMu)
	recordFailing bool       // the last write of the state file failed (under loss.checkMu)
}

// boltFileName is the tenant's buffer file in the data dir.
func boltFileName(tenant string) string { return "buffer-" + tenant + ".db" }

// OpenBolt opens (creating if needed) the buffer of cfg.Tenant in the data
// dir dir and locks it: while it is open, no other process can open it,
// and OpenBolt in a second process fails after BoltLockTimeout with "data
// dir … is in use by another authpipe". It registers the buffer's metrics
// on deps.Registerer. Close releases the file.
func OpenBolt(dir string, cfg Config, deps Deps) (*Bolt, error) {
	if dir == "" {
		return nil, errors.New("open buffer: no data dir")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	cfg = cfg.withDefaults()
	deps = deps.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open buffer: create data dir: %w", err)
	}
	path := filepath.Join(dir, boltFileName(cfg.Tenant))
	state, err := readBoltState(path)
	if err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	_, statErr := os.Stat(path)
	existed := statErr == nil
	db, err := bbolt.Open(path, 0o600, boltOptions())
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, inUseError{fmt.Sprintf("open buffer: data dir %s is in use by another authpipe (%s stayed locked for %s)", dir, path, BoltLockTimeout)}
	}
	if err != nil {
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
	}
	// A compaction's copy left by a crash before it replaced the file: the
	// file itself is complete (see compact). Removed under the file's lock,
	// so never while another process compacts.
	if err := os.Remove(compactName(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer: remove leftover compaction copy: %w", err)
	}
	b := &Bolt{
		db:      db,
		path:    path,
		cfg:     cfg,
		log:     deps.Logger.With("component", "buffer", "tenant", cfg.Tenant),
		clock:   deps.Clock,
		closed:  make(chan struct{}),
		cursors: make(map[string]streamID),
		notes:   make(map[streamID]string),
		wake:    make(chan struct{}),

		compactMin: CompactMinBytes,
	}
	if err := db.Update(b.initFile); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
	}
	if err := registerGauges(deps.Registerer, cfg.Tenant, b.log, b.clock, b.gauges); err != nil {
		_ = db.Close()
		return nil, err
	}
	b.m = newMetrics(deps.Registerer, deps.Stages)
	if err := b.registerFileMetrics(deps.Registerer); err != nil {
		_ = db.Close()
		return nil, err
	}
	b.loss = newLossWatch(deps.Registerer, b.log, b.clock)
	if err := b.openLoss(existed, state); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
	}
	return b, nil
}
func (b *Bolt) initFile(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bktMeta, bktStream, bktSeen, bktDedupe, bktGroups, bktDLQ, bktReasons, bktBehind} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bktMeta)
	for _, kv := range []struct{ key, want []byte }{
		{bkeyTenant, []byte(b.cfg.Tenant)},
		{bkeyVersion, []byte(boltFileVersion)},
	} {
		got := meta.Get(kv.key)
		if got == nil {
			if err := meta.Put(kv.key, kv.want); err != nil {
				return err
			}
			continue
		}
		if !bytes.Equal(got, kv.want) {
			return fmt.Errorf("file has %s %q, want %q", kv.key, got, kv.want)
		}
	}
	return nil
}

// Close writes failure reasons noted since the last write, records the
// file's state beside it (see CheckLoss), wakes blocked reads (they return
// an error) and releases the file. Later calls return errors.
func (b *Bolt) Close() error {
	var err error
	b.closeOnce.Do(func() {
		if ferr := b.update(context.Background(), func(*bbolt.Tx) error { return errNoChange }); ferr != nil {
			b.log.Warn("write noted failure reasons on close", "err", ferr)
		}
		if _, ferr := b.check(); ferr != nil {
			b.log.Warn("record buffer state on close", "err", ferr)
		}
		b.dbMu.Lock()
		defer b.dbMu.Unlock()
		close(b.closed)
		if cerr := b.db.Close(); cerr != nil {
			err = fmt.Errorf("close buffer: %w", cerr)
		}
	})
	return err
}
func (b *Bolt) isClosed() bool {
	select {
	case <-b.closed:
		return true
	default:
		return false
	}
}

// Config returns the configuration in use, defaults applied.
func (b *Bolt) Config() Config { return b.cfg }

// Path returns the buffer file.
func (b *Bolt) Path() string { return b.path }
func (b *Bolt) nowMS() int64 { return b.clock.Now().UnixMilli() }

// update runs fn in one write transaction, which bbolt syncs to disk on
// commit; failure reasons noted since the last write are written first. fn
// returns errNoChange when it wrote nothing: the transaction then rolls
// back (no sync) unless there were reasons to write.
func (b *Bolt) update(ctx context.Context, fn func(tx *bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.isClosed() {
		return errClosed
	}
	b.mu.Lock()
	notes := maps.Clone(b.notes)
	b.mu.Unlock()
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.isClosed() {
		return errClosed
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		reasons := tx.Bucket(bktReasons)
		for id, reason := range notes {
			if err := reasons.Put(id.key(), []byte(reason)); err != nil {
				return fmt.Errorf("write failure reason: %w", err)
			}
		}
		err := fn(tx)
		if errors.Is(err, errNoChange) && len(notes) > 0 {
			return nil
		}
		return err
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(notes) > 0 {
		b.mu.Lock()
		for k, v := range notes {
			if b.notes[k] == v {
				delete(b.notes, k)
			}
		}
		b.mu.Unlock()
	}
	return nil
}
func (b *Bolt) view(fn func(tx *bbolt.Tx) error) error {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if b.isClosed() {
		return errClosed
	}
	return b.db.View(fn)
}

// registerFileMetrics registers the file's size and its compactions.
func (b *Bolt) registerFileMetrics(reg prometheus.Registerer) error {
	b.compactions = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "authpipe_buffer_compactions_total",
		Help: "Compactions of the embedded buffer's file (copied without its free pages once at least half of it was free).",
	})
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "authpipe_buffer_file_bytes",
		Help: "Size of the embedded buffer's file on disk.",
	}, func() float64 {
		fi, err := os.Stat(b.path)
		if err != nil {
			return 0
		}
		return float64(fi.Size())
	})
	for _, c := range []prometheus.Collector{b.compactions, size} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register buffer metrics: %w", err)
		}
	}
	return nil
}

// noteRead counts n bytes of entries read for residentFile.
func (b *Bolt) noteRead(n int) {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if !b.isClosed() {
		b.resident.noteRead(b.db, n)
	}
}

// releasePages releases the file's mapped pages now (residentFile).
func (b *Bolt) releasePages() {
	b.dbMu.RLock()
	defer b.dbMu.RUnlock()
	if !b.isClosed() {
		b.resident.release(b.db)
	}
}

// Ping checks that the buffer file is open and readable.
func (b *Bolt) Ping(context.Context) error {
	if err := b.view(func(*bbolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping buffer: %w", err)
	}
	return nil
}
