package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

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
		return addCount(g, getCount(meta, bkeyAdded)-getCount(meta, bkeyLength), bkeyRead)
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
	count = pageSize(count)
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
		var from []byte // nil: Seek starts at the first key
		if last, ok := g.lastDelivered(); ok {
			from = last.succ().key()
		}
		var keys [][]byte
		c := tx.Bucket(bktStream).Cursor()
		for k, v := c.Seek(from); k != nil && len(out) < count; k, v = c.Next() {
			logID, raw, fields, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("entry %s: %w", mustID(k), err)
			}
			out = append(out, Entry{ID: mustID(k).String(), LogID: logID, Raw: raw, Deliveries: 1, fields: fields})
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
		return addCount(g.b, int64(len(keys)), bkeyRead, bkeyPending)
	})
	if err != nil {
		return nil, fmt.Errorf("read group %s: %w", name, err)
	}
	n := 0
	for _, e := range out {
		n += len(e.Raw)
	}
	b.noteRead(n)
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
			if err := addCount(g.b, -1, bkeyPending); err != nil {
				return nil, err
			}
			o.lost = append(o.lost, id.String())
			continue
		}
		logID, raw, fields, err := decodeEntry(v)
		if err != nil {
			return nil, fmt.Errorf("entry %s: %w", id, err)
		}
		rec := pelRecord{deliveries: c.rec.deliveries + 1, at: now, consumer: consumer}
		e := Entry{ID: id.String(), LogID: logID, Raw: raw, Deliveries: rec.deliveries, fields: fields}
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
	count = pageSize(count)
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
			from = nil // Seek starts at the first key
		}
		// Keep going while a whole page was dead-lettered or lost, so that
		// an empty result always means the end of the list.
		for {
			var cands []pendingCandidate
			c := g.pel.Cursor()
			for k, v := c.Seek(from); k != nil && len(cands) < count; k, v = c.Next() {
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
