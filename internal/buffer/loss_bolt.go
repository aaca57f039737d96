package buffer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// The embedded buffer's file can lose data only while authpipe is stopped:
// replaced by an older copy (a restored backup or snapshot of the file),
// or deleted. Nothing inside the file can tell, so a small state file
// beside it (boltStateName) records, every CheckLoss and at Close, the
// file's last transaction id (bbolt's, which only grows), the checkpoint
// and the delivered watermark. OpenBolt compares the file with it: a file
// gone, or with an older transaction id or checkpoint, is lost data. Limits
// (docs/runbook.md, AuthpipeBufferDataLoss):
//
//   - A copy taken after the last record is not noticed: after a crash,
//     the last two seconds or so. Such a copy holds its own checkpoint, so
//     what came after it is polled again anyway; only logs backfilled or
//     dead letters replayed in those seconds may be missing.
//   - A data dir restored as a whole (file and record together) is not
//     noticed either: the restored file is consistent with its record. Its
//     checkpoint makes the poller fetch everything after it again (nothing
//     within Auth0's retention is lost), but what was delivered after the
//     backup is sent again, beyond Segment's 24-hour dedupe if older.
//   - A file rewritten by `bbolt compact` has a new transaction count and
//     looks older: delete the record first.

// boltStateName is the state file of a tenant's buffer file.
func boltStateName(path string) string { return path + ".state" }

// boltState is the record beside the buffer file.
type boltState struct {
	Version    int       `json:"version"`
	Tenant     string    `json:"tenant"`
	TxID       int       `json:"txid"`       // the file's last committed transaction
	Checkpoint string    `json:"checkpoint"` // stored in the file then
	Delivered  string    `json:"delivered"`  // the delivered watermark then
	Written    time.Time `json:"written"`
	// Repoll is a re-poll after lost data that had not got through the
	// lost window: the next process continues it.
	Repoll *boltRepoll `json:"repoll,omitempty"`
}

type boltRepoll struct {
	From  string    `json:"from"`
	Until string    `json:"until"`
	At    time.Time `json:"at"`
}

const boltStateVersion = 1

// readBoltState reads the record beside path; nil when there is none.
func readBoltState(path string) (*boltState, error) {
	data, err := os.ReadFile(boltStateName(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read buffer state %s: %w", boltStateName(path), err)
	}
	var st boltState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("read buffer state %s: %w", boltStateName(path), err)
	}
	if st.Version != boltStateVersion {
		return nil, fmt.Errorf("read buffer state %s: version %d, want %d", boltStateName(path), st.Version, boltStateVersion)
	}
	return &st, nil
}

// writeBoltState replaces the record atomically and durably: a temporary
// file synced, renamed over the record, the directory synced.
func writeBoltState(path string, st boltState) error {
	name := boltStateName(path)
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write buffer state: %w", err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write buffer state: %w", werr)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("write buffer state: %w", err)
	}
	_ = syncDir(filepath.Dir(name))
	return nil
}

// openLoss compares the freshly opened file with the record beside it
// (existed: the file was there before OpenBolt) and makes one incident of
// what is missing; then it records the file's state.
func (b *Bolt) openLoss(existed bool, st *boltState) error {
	w := b.loss
	w.checkMu.Lock()
	defer w.checkMu.Unlock()
	sv, txid, err := b.survey()
	if err != nil {
		return err
	}
	if st != nil && st.Tenant == b.cfg.Tenant {
		snap := memory{checkpoint: st.Checkpoint, delivered: st.Delivered, stream: true, groups: map[string]int{}}
		if r := st.Repoll; r != nil {
			// Counted by the process that found it; continued here.
			w.gen = 1
			w.repoll = &Incident{Generation: 1, At: r.At, Repoll: true, RepollFrom: r.From, RepollUntil: r.Until}
			w.lastSign = time.Time{} // not this process's: nothing to fold into
		}
		var found []Finding
		switch {
		case !existed:
			found = append(found, Finding{LostFile, fmt.Sprintf("buffer file %s was gone (recorded at %s, transaction %d): a new, empty one was created",
				b.path, st.Written.UTC().Format(time.RFC3339), st.TxID)})
		case txid < st.TxID:
			found = append(found, Finding{LostFile, fmt.Sprintf("buffer file %s is older than recorded at %s (transaction %d, recorded %d): replaced by an older copy",
				b.path, st.Written.UTC().Format(time.RFC3339), txid, st.TxID)})
		}
		found = append(found, observe(snap, sv, nil)...)
		if len(found) > 0 {
			w.open(snap, found)
		}
		w.mu.Lock()
		w.mem.checkpoint, w.mem.delivered = st.Checkpoint, st.Delivered
		w.mu.Unlock()
		w.absorb(snap, sv)
	} else {
		w.absorb(w.snapshot(), sv)
	}
	return b.record(txid)
}

// record writes the state file when anything in it changed (mu-free: the
// caller holds checkMu).
func (b *Bolt) record(txid int) error {
	w := b.loss
	w.mu.Lock()
	st := boltState{
		Version: boltStateVersion, Tenant: b.cfg.Tenant, TxID: txid,
		Checkpoint: w.mem.checkpoint, Delivered: w.mem.delivered,
	}
	if r := w.repoll; r != nil && !repollDone(r, w.mem.checkpoint) {
		st.Repoll = &boltRepoll{From: r.RepollFrom, Until: r.RepollUntil, At: r.At}
	}
	w.mu.Unlock()
	prev := b.recorded
	if prev != nil && prev.TxID == st.TxID && prev.Checkpoint == st.Checkpoint && prev.Delivered == st.Delivered &&
		(prev.Repoll == nil) == (st.Repoll == nil) {
		return nil
	}
	st.Written = b.clock.Now().UTC()
	if err := writeBoltState(b.path, st); err != nil {
		if !b.recordFailing {
			b.recordFailing = true
			b.log.Warn("cannot record the buffer file's state beside it: a file replaced by an older copy would go unnoticed", "err", err)
		}
		return err
	}
	if b.recordFailing {
		b.recordFailing = false
		b.log.Info("buffer file's state recorded again")
	}
	b.recorded = &st
	return nil
}

// survey reads the file's state for loss detection and the delivered
// watermark, and its last transaction id; acknowledged entries leave the
// behind bucket.
func (b *Bolt) survey() (survey, int, error) {
	sv := survey{stream: true, groups: map[string]bool{}}
	var txid int
	var drop [][]byte
	cutoff := []byte(b.clock.Now().Add(-b.cfg.Retention + dedupeSlack).UTC().Format("20060102150405"))
	err := b.view(func(tx *bbolt.Tx) error {
		txid = txID(tx)
		meta, stream := tx.Bucket(bktMeta), tx.Bucket(bktStream)
		sv.checkpoint = string(meta.Get(bkeyCheckpoint))
		var cand *streamID
		consider := func(id streamID) {
			if cand == nil || id.less(*cand) {
				cand = &id
			}
		}
		err := tx.Bucket(bktGroups).ForEachBucket(func(name []byte) error {
			sv.groups[string(name)] = true
			g, err := openGroup(tx, string(name))
			if err != nil {
				return err
			}
			next := streamID{}
			if last, ok := g.lastDelivered(); ok {
				next = last.succ()
			}
			if k, _ := stream.Cursor().Seek(next.key()); k != nil {
				consider(mustID(k))
			}
			if k, _ := g.pel.Cursor().First(); k != nil {
				consider(mustID(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		c := stream.Cursor()
		var k, v []byte
		switch {
		case len(sv.groups) == 0:
			k, v = c.First()
		case cand != nil:
			k, v = c.Seek(cand.key())
		}
		if k != nil {
			logID, _, _, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("entry %s: %w", mustID(k), err)
			}
			sv.first, sv.firstLog = mustID(k).String(), logID
		}
		if k, v := c.Last(); k != nil {
			logID, _, _, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("entry %s: %w", mustID(k), err)
			}
			sv.newest, sv.newestLog = mustID(k).String(), logID
		}
		// The newest entry's log_id, or when every entry was acknowledged
		// and trimmed, the highest ever added (see Redis.surveyDedupe).
		ref := sv.newestLog
		if ref == "" {
			ref = string(meta.Get(bkeyHead))
		}
		if len(ref) == auth0log.IDLength && bytes.Compare(secondOf(ref), cutoff) >= 0 {
			sv.dedupeRef, sv.dedupeMissing = ref, !dedupeOf(tx).has(ref)
		}
		first, _ := parseID(sv.first)
		bc := tx.Bucket(bktBehind).Cursor()
		for k, _ := bc.First(); k != nil; k, _ = bc.Next() {
			id, err := idFromKey(k[behindSecond:])
			if err != nil {
				return fmt.Errorf("behind entry: %w", err)
			}
			if len(drop) < behindCleanup && (sv.first == "" || id.less(first)) {
				drop = append(drop, bytes.Clone(k))
				continue
			}
			sv.behindLow = secondFrom(string(k[:behindSecond]))
			break
		}
		return nil
	})
	if err != nil {
		return survey{}, 0, fmt.Errorf("survey buffer: %w", err)
	}
	if len(drop) > 0 {
		err := b.update(context.Background(), func(tx *bbolt.Tx) error {
			bb := tx.Bucket(bktBehind)
			for _, k := range drop {
				if err := bb.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return survey{}, 0, fmt.Errorf("survey buffer: drop acknowledged behind entries: %w", err)
		}
	}
	return sv, txid, nil
}

// behindSecond is the length of a behind key's leading second.
const behindSecond = 14

// putBehind records an entry added out of log_id order (below head): key
// its log_id's second then its id, so the oldest comes first.
func putBehind(tx *bbolt.Tx, logID string, id streamID) error {
	sec := secondOf(logID)
	if len(sec) != behindSecond {
		return nil
	}
	return tx.Bucket(bktBehind).Put(append(sec, id.key()...), []byte{})
}

// secondOf is the 14-digit UTC second (YYYYMMDDhhmmss) a log_id embeds,
// nil when it is too short.
func secondOf(logID string) []byte {
	if len(logID) < 3+behindSecond {
		return nil
	}
	return []byte(logID[3 : 3+behindSecond])
}

// CheckLoss surveys the file (see Redis.CheckLoss: the same signs), makes
// one incident of any it finds, refreshes the delivered watermark and
// records the file's state beside it, so that a file replaced by an older
// copy while authpipe is stopped is noticed at the next OpenBolt. authpipe
// run calls it every two seconds.
func (b *Bolt) CheckLoss(context.Context) error {
	_, err := b.check()
	return err
}

func (b *Bolt) check() (survey, error) {
	w := b.loss
	w.checkMu.Lock()
	defer w.checkMu.Unlock()
	snap := w.snapshot()
	sv, txid, err := b.survey()
	if err != nil {
		return survey{}, err
	}
	if found := observe(snap, sv, w.takeObservations()); len(found) > 0 {
		w.open(snap, found)
	}
	w.absorb(snap, sv)
	return sv, b.record(txid)
}

// Resume tells the poller where to continue (see Redis.Resume).
func (b *Bolt) Resume(_ context.Context, since uint64) (Position, error) {
	sv, err := b.check()
	if err != nil {
		return Position{}, fmt.Errorf("resume: %w", err)
	}
	return b.loss.position(sv.checkpoint, since), nil
}

// LossGeneration is the number of data-loss incidents found (see Redis).
func (b *Bolt) LossGeneration() uint64 { return b.loss.generation() }

// LastIncident returns the last data-loss incident this process found.
func (b *Bolt) LastIncident() (Incident, bool) { return b.loss.lastIncident() }
