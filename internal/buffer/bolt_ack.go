package buffer

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

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
			if err := addCount(g.b, -acked, bkeyPending); err != nil {
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
	count = pageSize(count)
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
