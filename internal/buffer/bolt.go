package buffer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/authpipe/authpipe/internal/auth0log"
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
	db    *bbolt.DB
	path  string
	cfg   Config
	log   *slog.Logger
	clock clockwork.Clock
	m     *bufferMetrics

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
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: BoltLockTimeout,
		// The freelist is rebuilt on open instead of written on every
		// commit (etcd's setting); it does not affect durability.
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, inUseError{fmt.Sprintf("open buffer: data dir %s is in use by another authpipe (%s stayed locked for %s)", dir, path, BoltLockTimeout)}
	}
	if err != nil {
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
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
	}
	if err := db.Update(b.initFile); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
	}
	if err := registerGauges(deps.Registerer, cfg.Tenant, b.log, b.clock, b.gauges); err != nil {
		_ = db.Close()
		return nil, err
	}
	b.m = newMetrics(deps.Registerer, deps.Stages, cfg.Tenant)
	b.loss = newLossWatch(deps.Registerer, cfg.Tenant, b.log, b.clock)
	if err := b.openLoss(existed, state); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open buffer file %s: %w", path, err)
	}
	return b, nil
}

func (b *Bolt) initFile(tx *bbolt.Tx) error {
	for _, name := range [][]byte{bktMeta, bktStream, bktSeen, bktGroups, bktDLQ, bktReasons, bktBehind} {
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
	notes := make(map[streamID]string, len(b.notes))
	for k, v := range b.notes {
		notes[k] = v
	}
	b.mu.Unlock()
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
	if b.isClosed() {
		return errClosed
	}
	return b.db.View(fn)
}

// Ping checks that the buffer file is open and readable.
func (b *Bolt) Ping(context.Context) error {
	if err := b.view(func(*bbolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping buffer: %w", err)
	}
	return nil
}

// Checkpoint returns the stored checkpoint, "" when there is none yet.
func (b *Bolt) Checkpoint(context.Context) (string, error) {
	var cp string
	err := b.view(func(tx *bbolt.Tx) error {
		cp = string(tx.Bucket(bktMeta).Get(bkeyCheckpoint))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read checkpoint: %w", err)
	}
	b.loss.noteCheckpoint(cp)
	return cp, nil
}

// Append stores a page of logs and the checkpoint that follows it in one
// transaction, synced to disk before it returns: logs whose log_id was
// stored before are skipped (dedupe), new ones are added to the stream in
// page order, and the checkpoint is set unless it would move backwards (""
// leaves it as is). On error nothing was written. It returns how many logs
// were new.
func (b *Bolt) Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error) {
	b.m.stage.Received.Add(float64(len(logs)))
	if checkpoint != "" {
		if err := auth0log.ValidateID(checkpoint); err != nil {
			return 0, fmt.Errorf("append page: checkpoint: %w", err)
		}
	}
	ids := make([]string, len(logs))
	for i, l := range logs {
		if err := auth0log.ValidateID(l.ID); err != nil {
			return 0, fmt.Errorf("append page: log %d: %w", i, err)
		}
		if len(l.Raw) == 0 {
			return 0, fmt.Errorf("append page: log %d (%s): empty raw event", i, l.ID)
		}
		ids[i] = l.ID
	}
	if checkpoint != "" && !b.loss.mayAdvance() {
		return 0, fmt.Errorf("append page of %d logs: %w: the poller has not yet taken the re-poll", len(logs), ErrDataLoss)
	}
	if checkpoint == "" {
		b.loss.noteBehind(behindFrom(ids)) // see Redis.Append
	}
	var added, moved int
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		added, moved = 0, 0
		meta, stream, seen := tx.Bucket(bktMeta), tx.Bucket(bktStream), tx.Bucket(bktSeen)
		stream.FillPercent = 1 // keys only ever grow: pack the pages
		cur := string(meta.Get(bkeyCheckpoint))
		if cur != "" && auth0log.ValidateID(cur) != nil {
			return errors.New("stored checkpoint is not a log_id")
		}
		var last streamID
		if v := meta.Get(bkeyLast); v != nil {
			var err error
			if last, err = idFromKey(v); err != nil {
				return fmt.Errorf("last stream id: %w", err)
			}
		}
		now := uint64(max(b.nowMS(), 0))
		head := string(meta.Get(bkeyHead))
		top := head // the highest log_id in the stream: below it is behind (see appendScript)
		for _, l := range logs {
			logID := []byte(l.ID)
			if seen.Get(logID) != nil {
				continue
			}
			last = last.next(now)
			if err := stream.Put(last.key(), encodeEntry(l.ID, l.Raw)); err != nil {
				return err
			}
			if err := seen.Put(logID, []byte{}); err != nil {
				return err
			}
			if top != "" && l.ID < top {
				if err := putBehind(tx, l.ID, last); err != nil {
					return err
				}
			} else {
				top = l.ID
			}
			added++
		}
		if top != head {
			if err := meta.Put(bkeyHead, []byte(top)); err != nil {
				return err
			}
		}
		if added > 0 {
			if err := meta.Put(bkeyLast, last.key()); err != nil {
				return err
			}
			if err := addCount(meta, bkeyAdded, int64(added)); err != nil {
				return err
			}
			if err := addCount(meta, bkeyLength, int64(added)); err != nil {
				return err
			}
		}
		if checkpoint != "" {
			switch {
			case cur == "" || cur < checkpoint: // equal-length digit strings
				if err := meta.Put(bkeyCheckpoint, []byte(checkpoint)); err != nil {
					return err
				}
				moved = 1
			case checkpoint < cur:
				moved = -1
			}
		}
		if added == 0 && moved <= 0 {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("append page of %d logs: %w", len(logs), err)
	}
	b.m.stage.Written.Add(float64(added))
	b.m.duplicates.Add(float64(len(logs) - added))
	if moved < 0 {
		b.log.Warn("checkpoint older than the stored one kept unchanged", "checkpoint", checkpoint)
	} else {
		b.loss.noteCheckpoint(checkpoint)
	}
	if added > 0 {
		b.notify()
	}
	return added, nil
}

// notify wakes every Read blocked for new entries.
func (b *Bolt) notify() {
	b.mu.Lock()
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

func (b *Bolt) wakeup() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.wake
}

// EnsureGroup creates the consumer group if missing. A new group starts at
// the beginning of the stream, so it sees every entry still buffered.
func (b *Bolt) EnsureGroup(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("ensure group: empty group name")
	}
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		groups := tx.Bucket(bktGroups)
		if groups.Bucket([]byte(name)) != nil {
			return errNoChange
		}
		g, err := groups.CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		if _, err := g.CreateBucket(bktPEL); err != nil {
			return err
		}
		// Entries trimmed before the group existed count as read: the
		// group's undelivered entries are exactly those in the stream.
		meta := tx.Bucket(bktMeta)
		return addCount(g, bkeyRead, getCount(meta, bkeyAdded)-getCount(meta, bkeyLength))
	})
	if err != nil {
		return fmt.Errorf("create group %s: %w", name, err)
	}
	b.loss.noteGroup(name)
	return nil
}

// Read delivers up to count new entries to consumer (those after the
// group's last delivered entry), waiting up to block for some to be
// appended; block <= 0 does not wait. A timeout returns no entries and no
// error; ctx ends the wait with its error, Close with an error. Entries stay
// pending until acknowledged.
func (b *Bolt) Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]Entry, error) {
	if count <= 0 {
		count = defaultCount
	}
	var timer *time.Timer
	for {
		wake := b.wakeup() // before reading: an append after the read wakes us
		es, err := b.readNew(ctx, group, consumer, count)
		if err != nil || len(es) > 0 || block <= 0 {
			return es, err
		}
		if timer == nil {
			timer = time.NewTimer(block)
			defer timer.Stop()
		}
		select {
		case <-wake:
		case <-timer.C:
			return nil, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("read group %s: %w", group, ctx.Err())
		case <-b.closed:
			return nil, fmt.Errorf("read group %s: %w", group, errClosed)
		}
	}
}

func (b *Bolt) readNew(ctx context.Context, name, consumer string, count int) ([]Entry, error) {
	var out []Entry
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		out = out[:0]
		g, err := openGroup(tx, name)
		if err != nil {
			return err
		}
		c := tx.Bucket(bktStream).Cursor()
		var k, v []byte
		if last, ok := g.lastDelivered(); ok {
			k, v = c.Seek(last.succ().key())
		} else {
			k, v = c.First()
		}
		var keys [][]byte
		for ; k != nil && len(out) < count; k, v = c.Next() {
			logID, raw, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("entry %s: %w", mustID(k), err)
			}
			out = append(out, Entry{ID: mustID(k).String(), LogID: logID, Raw: raw, Deliveries: 1})
			keys = append(keys, bytes.Clone(k))
		}
		if len(out) == 0 {
			return errNoChange
		}
		g.pel.FillPercent = 0.9
		rec := pelRecord{deliveries: 1, at: b.nowMS(), consumer: consumer}.encode()
		for _, k := range keys {
			if err := g.pel.Put(k, rec); err != nil {
				return err
			}
		}
		if err := g.b.Put(bkeyLast, keys[len(keys)-1]); err != nil {
			return err
		}
		if err := addCount(g.b, bkeyRead, int64(len(keys))); err != nil {
			return err
		}
		return addCount(g.b, bkeyPending, int64(len(keys)))
	})
	if err != nil {
		return nil, fmt.Errorf("read group %s: %w", name, err)
	}
	n := 0
	for _, e := range out {
		n += len(e.Raw)
	}
	b.resident.noteRead(b.db, n)
	return out, nil
}

// txOutcome collects what a transaction did that is reported (metrics,
// logs) only once it has committed.
type txOutcome struct {
	lost        []string
	deadLetters []deadLettered
}

type deadLettered struct {
	id, logID, kind string
	deliveries      int64
}

func (b *Bolt) report(group string, o txOutcome) {
	if len(o.lost) > 0 {
		b.m.lost.Add(float64(len(o.lost)))
		b.log.Error("pending entries deleted from the stream before acknowledgement: events lost",
			"group", group, "count", len(o.lost), "ids", o.lost)
	}
	for _, d := range o.deadLetters {
		b.m.deadLetters.WithLabelValues(d.kind).Inc()
		b.m.stage.Failed.Inc()
		b.log.Warn("entry moved to dead letters", "group", group, "id", d.id, "log_id", d.logID,
			"kind", d.kind, "deliveries", d.deliveries)
	}
	if len(o.deadLetters) > 0 {
		b.mu.Lock()
		for _, d := range o.deadLetters {
			if id, err := parseID(d.id); err == nil {
				delete(b.notes, id)
			}
		}
		b.mu.Unlock()
	}
}

// pendingCandidate is a pending entry about to be delivered again.
type pendingCandidate struct {
	key []byte
	rec pelRecord
}

// redeliver delivers pending entries again to consumer within tx: each
// one's delivery count goes up and its idle time restarts. Entries delivered
// more than MaxDeliveries times are dead-lettered instead, entries gone from
// the stream are dropped from the pending list as lost.
func (b *Bolt) redeliver(tx *bbolt.Tx, g group, consumer string, cands []pendingCandidate, o *txOutcome) ([]Entry, error) {
	stream := tx.Bucket(bktStream)
	now := b.nowMS()
	var out []Entry
	for _, c := range cands {
		id := mustID(c.key)
		v := stream.Get(c.key)
		if v == nil {
			if err := g.pel.Delete(c.key); err != nil {
				return nil, err
			}
			if err := addCount(g.b, bkeyPending, -1); err != nil {
				return nil, err
			}
			o.lost = append(o.lost, id.String())
			continue
		}
		logID, raw, err := decodeEntry(v)
		if err != nil {
			return nil, fmt.Errorf("entry %s: %w", id, err)
		}
		rec := pelRecord{deliveries: c.rec.deliveries + 1, at: now, consumer: consumer}
		e := Entry{ID: id.String(), LogID: logID, Raw: raw, Deliveries: rec.deliveries}
		// rec.deliveries counts this delivery too: one less went unacknowledged.
		if rec.deliveries-1 >= int64(b.cfg.MaxDeliveries) {
			d, err := b.deadLetterTx(tx, g, c.key, rec, e, "", true)
			if err != nil {
				return nil, err
			}
			o.deadLetters = append(o.deadLetters, d)
			continue
		}
		if err := g.pel.Put(c.key, rec.encode()); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// ReadPending delivers again up to count entries of consumer's own pending
// list with ids after `after` ("0" for the first): what a restarted
// consumer held when it stopped. Pass the last returned id to page on; no
// entries means the list is done. Delivery counts are filled in (reading
// adds one); entries delivered more than MaxDeliveries times are
// dead-lettered instead of returned, and entries found deleted from the
// stream are counted as lost, logged at error and dropped from the pending
// list.
func (b *Bolt) ReadPending(ctx context.Context, name, consumer, after string, count int) ([]Entry, error) {
	if count <= 0 {
		count = defaultCount
	}
	if after == "" {
		after = "0"
	}
	start, err := parseID(after)
	if err != nil {
		return nil, fmt.Errorf("read pending of group %s: %w", name, err)
	}
	var (
		out []Entry
		o   txOutcome
	)
	err = b.update(ctx, func(tx *bbolt.Tx) error {
		out, o = nil, txOutcome{}
		g, err := openGroup(tx, name)
		if err != nil {
			return err
		}
		from := start.succ().key()
		if after == "0" || after == "0-0" {
			from = nil
		}
		// Keep going while a whole page was dead-lettered or lost, so that
		// an empty result always means the end of the list.
		for {
			var cands []pendingCandidate
			c := g.pel.Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			for ; k != nil && len(cands) < count; k, v = c.Next() {
				rec, err := decodePEL(v)
				if err != nil {
					return fmt.Errorf("pending entry %s: %w", mustID(k), err)
				}
				if rec.consumer == consumer {
					cands = append(cands, pendingCandidate{key: bytes.Clone(k), rec: rec})
				}
			}
			if len(cands) == 0 {
				break
			}
			from = mustID(cands[len(cands)-1].key).succ().key()
			es, err := b.redeliver(tx, g, consumer, cands, &o)
			if err != nil {
				return err
			}
			out = es
			if len(es) > 0 {
				break
			}
		}
		if len(out) == 0 && len(o.lost) == 0 && len(o.deadLetters) == 0 {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read pending of group %s: %w", name, err)
	}
	b.report(name, o)
	return out, nil
}

// Ack acknowledges entries of group in one transaction: they leave the
// pending list and their failure reasons are removed. Ids not pending (or
// an unknown group) are ignored, as XACK does.
func (b *Bolt) Ack(ctx context.Context, name string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	parsed, err := parseIDs(ids)
	if err != nil {
		return fmt.Errorf("ack %d entries of group %s: %w", len(ids), name, err)
	}
	var acked int64
	err = b.update(ctx, func(tx *bbolt.Tx) error {
		acked = 0
		changed := false
		reasons := tx.Bucket(bktReasons)
		g, gerr := openGroup(tx, name)
		hasGroup := gerr == nil
		for _, id := range parsed {
			k := id.key()
			if reasons.Get(k) != nil {
				if err := reasons.Delete(k); err != nil {
					return err
				}
				changed = true
			}
			if hasGroup && g.pel.Get(k) != nil {
				if err := g.pel.Delete(k); err != nil {
					return err
				}
				acked++
			}
		}
		if acked > 0 {
			if err := addCount(g.b, bkeyPending, -acked); err != nil {
				return err
			}
		} else if !changed {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ack %d entries of group %s: %w", len(ids), name, err)
	}
	b.mu.Lock()
	for _, id := range parsed {
		delete(b.notes, id)
	}
	b.mu.Unlock()
	b.m.stage.Acked.Add(float64(acked))
	return nil
}

// Touch tells the buffer that consumer still works on the entries: their
// idle time restarts (and they are now consumer's), so Reclaim leaves them
// alone, without adding to their delivery count. Entries no longer pending
// are ignored.
func (b *Bolt) Touch(ctx context.Context, name, consumer string, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	parsed, err := parseIDs(ids)
	if err != nil {
		return fmt.Errorf("touch %d entries of group %s: %w", len(ids), name, err)
	}
	err = b.update(ctx, func(tx *bbolt.Tx) error {
		g, err := openGroup(tx, name)
		if err != nil {
			return err
		}
		now, touched := b.nowMS(), 0
		for _, id := range parsed {
			k := id.key()
			v := g.pel.Get(k)
			if v == nil {
				continue
			}
			rec, err := decodePEL(v)
			if err != nil {
				return fmt.Errorf("pending entry %s: %w", id, err)
			}
			rec.at, rec.consumer = now, consumer
			if err := g.pel.Put(k, rec.encode()); err != nil {
				return err
			}
			touched++
		}
		if touched == 0 {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("touch %d entries of group %s: %w", len(ids), name, err)
	}
	return nil
}

// Reclaim takes over up to count entries of group that have been pending
// (with any consumer) for at least minIdle by the buffer's clock, and
// delivers them to consumer. Like XAUTOCLAIM it scans at most 10×count
// pending entries per call from where the last call stopped, so successive
// calls walk the whole pending list. Delivery counts are filled in; entries
// delivered more than MaxDeliveries times are moved to the dead letters
// with the reason "delivered N times without acknowledgement; last error:
// …" and not returned. Pending entries found deleted from the stream are
// counted in authpipe_buffer_lost_total and logged at error.
func (b *Bolt) Reclaim(ctx context.Context, name, consumer string, minIdle time.Duration, count int) ([]Entry, error) {
	if count <= 0 {
		count = defaultCount
	}
	b.mu.Lock()
	start, hasStart := b.cursors[name]
	b.mu.Unlock()
	var (
		out  []Entry
		o    txOutcome
		next streamID
		more bool
	)
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		out, o, next, more = nil, txOutcome{}, streamID{}, false
		g, err := openGroup(tx, name)
		if err != nil {
			return err
		}
		now, idle := b.nowMS(), minIdle.Milliseconds()
		var cands []pendingCandidate
		c := g.pel.Cursor()
		k, v := c.First()
		if hasStart {
			k, v = c.Seek(start.key())
		}
		for attempts := 10 * count; k != nil; k, v = c.Next() {
			if attempts == 0 || len(cands) == count {
				next, more = mustID(k), true
				break
			}
			attempts--
			rec, err := decodePEL(v)
			if err != nil {
				return fmt.Errorf("pending entry %s: %w", mustID(k), err)
			}
			if now-rec.at >= idle {
				cands = append(cands, pendingCandidate{key: bytes.Clone(k), rec: rec})
			}
		}
		if len(cands) == 0 {
			return errNoChange
		}
		out, err = b.redeliver(tx, g, consumer, cands, &o)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reclaim entries of group %s: %w", name, err)
	}
	b.mu.Lock()
	if more {
		b.cursors[name] = next
	} else {
		delete(b.cursors, name)
	}
	b.mu.Unlock()
	b.report(name, o)
	return out, nil
}

// NoteFailure records why delivering an entry failed; the last reason noted
// becomes the dead-letter reason if the entry runs out of deliveries. Ack
// and DeadLetter remove it. The reason is written with the next write
// transaction (at the latest by Close), so noting costs no disk sync: a
// crash may forget the reasons noted since, and a later dead letter then
// says "last error: unknown".
func (b *Bolt) NoteFailure(_ context.Context, id, reason string) error {
	sid, err := parseID(id)
	if err != nil {
		return fmt.Errorf("note failure of entry %s: %w", id, err)
	}
	if b.isClosed() {
		return fmt.Errorf("note failure of entry %s: %w", id, errClosed)
	}
	b.mu.Lock()
	b.notes[sid] = truncate(reason)
	b.mu.Unlock()
	return nil
}

// noted returns the last failure reason noted for an entry, "unknown" if
// none.
func (b *Bolt) noted(tx *bbolt.Tx, k []byte) string {
	b.mu.Lock()
	r, ok := b.notes[mustID(k)]
	b.mu.Unlock()
	if ok {
		return r
	}
	if v := tx.Bucket(bktReasons).Get(k); v != nil {
		return string(v)
	}
	return "unknown"
}

// DeadLetter moves a pending entry of group to the dead letters with reason,
// acknowledging it, in one transaction. The log_id and raw event are taken
// from the stream (e's are used only if the entry is gone). An entry no
// longer pending (acknowledged meanwhile) is left alone. Start reason with
// a kind (see Reason) to count it under that kind.
func (b *Bolt) DeadLetter(ctx context.Context, name string, e Entry, reason string) error {
	id, err := parseID(e.ID)
	if err != nil {
		return fmt.Errorf("dead-letter entry %s of group %s: %w", e.ID, name, err)
	}
	var o txOutcome
	err = b.update(ctx, func(tx *bbolt.Tx) error {
		o = txOutcome{}
		g, err := openGroup(tx, name)
		if err != nil {
			return err
		}
		k := id.key()
		v := g.pel.Get(k)
		if v == nil {
			return errNoChange
		}
		rec, err := decodePEL(v)
		if err != nil {
			return fmt.Errorf("pending entry %s: %w", id, err)
		}
		d, err := b.deadLetterTx(tx, g, k, rec, e, truncate(reason), false)
		if err != nil {
			return err
		}
		o.deadLetters = append(o.deadLetters, d)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dead-letter entry %s of group %s: %w", e.ID, name, err)
	}
	b.report(name, o)
	return nil
}

// deadLetterTx moves the pending entry k of g to the dead letters within
// tx. With maxed the reason is built from the delivery count (this
// delivery excluded) and the last noted failure, as Redis' script does.
func (b *Bolt) deadLetterTx(tx *bbolt.Tx, g group, k []byte, rec pelRecord, e Entry, reason string, maxed bool) (deadLettered, error) {
	id := mustID(k)
	logID, raw := e.LogID, e.Raw
	if v := tx.Bucket(bktStream).Get(k); v != nil {
		var err error
		if logID, raw, err = decodeEntry(v); err != nil {
			return deadLettered{}, fmt.Errorf("entry %s: %w", id, err)
		}
	}
	deliveries, kind := rec.deliveries, reasonKind(reason)
	if maxed {
		deliveries--
		kind = ReasonMaxDeliveries
		reason = fmt.Sprintf("delivered %d times without acknowledgement; last error: %s", deliveries, b.noted(tx, k))
	}
	now := b.nowMS()
	dl, err := json.Marshal(boltDeadLetter{
		StreamID: id.String(), LogID: logID, Raw: raw, Reason: reason,
		Deliveries: deliveries, FailedAt: now,
	})
	if err != nil {
		return deadLettered{}, err
	}
	meta := tx.Bucket(bktMeta)
	var last streamID
	if v := meta.Get(bkeyDLQLast); v != nil {
		if last, err = idFromKey(v); err != nil {
			return deadLettered{}, fmt.Errorf("last dead-letter id: %w", err)
		}
	}
	dlID := last.next(uint64(max(now, 0))).key()
	if err := tx.Bucket(bktDLQ).Put(dlID, dl); err != nil {
		return deadLettered{}, err
	}
	if err := meta.Put(bkeyDLQLast, dlID); err != nil {
		return deadLettered{}, err
	}
	if err := addCount(meta, bkeyDLQLen, 1); err != nil {
		return deadLettered{}, err
	}
	if err := g.pel.Delete(k); err != nil {
		return deadLettered{}, err
	}
	if err := addCount(g.b, bkeyPending, -1); err != nil {
		return deadLettered{}, err
	}
	if err := tx.Bucket(bktReasons).Delete(k); err != nil {
		return deadLettered{}, err
	}
	return deadLettered{id: id.String(), logID: logID, kind: kind, deliveries: deliveries}, nil
}

// DeadLetters lists up to count dead letters, oldest first
// (DeadLettersAfter pages on).
func (b *Bolt) DeadLetters(ctx context.Context, count int) ([]DeadLetter, error) {
	return b.DeadLettersAfter(ctx, "", count)
}

// Trim removes stream entries older than the retention, but never one still
// pending in a group or not yet delivered to a group: it removes entries
// below the smallest of now − Retention, every group's oldest pending id and
// every group's first undelivered id, each transaction computing the bound
// and deleting up to trimChunk entries. It also forgets log_ids older than
// the retention in the dedupe set (Auth0 no longer serves those). It
// returns how many stream entries it removed.
func (b *Bolt) Trim(ctx context.Context) (int64, error) {
	cutoff := max(b.clock.Now().Add(-b.cfg.Retention).UnixMilli(), 0)
	// log_ids sort by their embedded time (whole seconds): those before
	// this one are older than the cutoff.
	seenBound := []byte(auth0log.CheckpointAt(time.Unix((cutoff+999)/1000, 0)))
	var total, seenTotal int64
	for {
		var trimmed, forgotten, stale int
		var bound streamID
		err := b.update(ctx, func(tx *bbolt.Tx) error {
			trimmed, forgotten, stale = 0, 0, 0
			var err error
			if bound, err = b.trimBound(tx, uint64(cutoff)); err != nil {
				return err
			}
			stream := tx.Bucket(bktStream)
			keys := collect(stream.Cursor(), func(k []byte) bool { return mustID(k).less(bound) })
			for _, k := range keys {
				if err := stream.Delete(k); err != nil {
					return err
				}
			}
			trimmed = len(keys)
			if err := addCount(tx.Bucket(bktMeta), bkeyLength, -int64(trimmed)); err != nil {
				return err
			}
			// Reasons noted for entries below the bound are stale (noted
			// after the entry was acknowledged): no group holds them.
			reasons := tx.Bucket(bktReasons)
			keys = collect(reasons.Cursor(), func(k []byte) bool { return mustID(k).less(bound) })
			for _, k := range keys {
				if err := reasons.Delete(k); err != nil {
					return err
				}
			}
			stale = len(keys)
			seen := tx.Bucket(bktSeen)
			keys = collect(seen.Cursor(), func(k []byte) bool { return bytes.Compare(k, seenBound) < 0 })
			for _, k := range keys {
				if err := seen.Delete(k); err != nil {
					return err
				}
			}
			forgotten = len(keys)
			if trimmed == 0 && forgotten == 0 && stale == 0 {
				return errNoChange
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("trim buffer: %w", err)
		}
		total += int64(trimmed)
		seenTotal += int64(forgotten)
		b.m.trimmed.Add(float64(trimmed))
		if trimmed < trimChunk && forgotten < trimChunk && stale < trimChunk {
			b.log.Debug("buffer trimmed", "minid", bound.String(), "trimmed", total, "seen_removed", seenTotal)
			return total, nil
		}
	}
}

// trimBound is the smallest id Trim must keep: the cutoff, every group's
// first undelivered entry and every group's oldest pending entry.
func (b *Bolt) trimBound(tx *bbolt.Tx, cutoff uint64) (streamID, error) {
	bound := streamID{ms: cutoff}
	err := tx.Bucket(bktGroups).ForEachBucket(func(name []byte) error {
		g, err := openGroup(tx, string(name))
		if err != nil {
			return err
		}
		first := streamID{} // nothing delivered yet: keep everything
		if last, ok := g.lastDelivered(); ok {
			first = last.succ()
		}
		if first.less(bound) {
			bound = first
		}
		if k, _ := g.pel.Cursor().First(); k != nil {
			if p := mustID(k); p.less(bound) {
				bound = p
			}
		}
		return nil
	})
	return bound, err
}

// collect copies up to trimChunk keys from the start of c while below
// accepts them (keys are sorted: it stops at the first it rejects).
func collect(c *bbolt.Cursor, below func(k []byte) bool) [][]byte {
	var keys [][]byte
	for k, _ := c.First(); k != nil && len(keys) < trimChunk && below(k); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// boltSnapshot is one consistent read of the counters behind Stats, Full
// and the gauges.
type boltSnapshot struct {
	length, deadLetters, added int64
	backlogs                   map[string]int64
	pending                    map[string]int64
}

func (b *Bolt) snapshot() (boltSnapshot, error) {
	s := boltSnapshot{backlogs: map[string]int64{}, pending: map[string]int64{}}
	err := b.view(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bktMeta)
		s.length, s.deadLetters, s.added = getCount(meta, bkeyLength), getCount(meta, bkeyDLQLen), getCount(meta, bkeyAdded)
		return tx.Bucket(bktGroups).ForEachBucket(func(name []byte) error {
			g, err := openGroup(tx, string(name))
			if err != nil {
				return err
			}
			s.backlogs[string(name)] = g.backlog(s.added)
			s.pending[string(name)] = getCount(g.b, bkeyPending)
			return nil
		})
	})
	if err != nil {
		return s, fmt.Errorf("read buffer stats: %w", err)
	}
	return s, nil
}

// aggregate returns the backlog of the slowest group (the stream length
// when there is no group) and the pending entries of all groups.
func (s boltSnapshot) aggregate() (maxBacklog, pending int64) {
	if len(s.backlogs) == 0 {
		return s.length, 0
	}
	for name, bl := range s.backlogs {
		maxBacklog = max(maxBacklog, bl)
		pending += s.pending[name]
	}
	return maxBacklog, pending
}

func (b *Bolt) gauges(context.Context) (gauges, error) {
	s, err := b.snapshot()
	if err != nil {
		return gauges{}, err
	}
	backlog, pending := s.aggregate()
	return gauges{backlog: backlog, pending: pending, length: s.length, deadLetters: s.deadLetters}, nil
}

// Stats reports the stream length, the group's backlog (undelivered +
// pending, exact) and pending entries, and the dead letters. For a group
// that does not exist yet, everything in the stream is backlog.
func (b *Bolt) Stats(_ context.Context, group string) (Stats, error) {
	s, err := b.snapshot()
	if err != nil {
		return Stats{}, err
	}
	st := Stats{Length: s.length, DeadLetters: s.deadLetters, Backlog: s.length}
	if bl, ok := s.backlogs[group]; ok {
		st.Backlog, st.Pending = bl, s.pending[group]
	}
	return st, nil
}

// Full reports whether the slowest group's backlog (the stream length while
// there is no group) has reached MaxEvents; always false when MaxEvents is 0.
// The poller pauses while it is full: Auth0 keeps the logs meanwhile.
func (b *Bolt) Full(context.Context) (bool, error) {
	if b.cfg.MaxEvents <= 0 {
		return false, nil
	}
	s, err := b.snapshot()
	if err != nil {
		return false, err
	}
	backlog, _ := s.aggregate()
	return backlog >= b.cfg.MaxEvents, nil
}
