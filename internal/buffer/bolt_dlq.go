package buffer

import (
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"
)

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
		if logID, raw, _, err = decodeEntry(v); err != nil {
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
	if err := addCount(meta, 1, bkeyDLQLen); err != nil {
		return deadLettered{}, err
	}
	if err := g.pel.Delete(k); err != nil {
		return deadLettered{}, err
	}
	if err := addCount(g.b, -1, bkeyPending); err != nil {
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
