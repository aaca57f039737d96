package buffer

import (
	"context"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"
)

// ResetGroup starts group over from the entries appended at or after from
// (by the buffer's clock, which also makes the entry ids), as if the group
// had been created then: its pending list is emptied, and its next Read
// delivers, in order, every entry still in the stream from that point on;
// the zero time starts it at the beginning of the stream. Entries before
// from count as delivered and acknowledged, so Trim may remove them.
// Entries appended after the call are always delivered, even with a from
// in the future.
//
// It is for a consumer that keeps its state in memory and rebuilds it from
// the stream when it starts (the threshold counter of the embedded backend):
// the entries it has seen before are delivered to it again. It is one
// transaction; the group must exist (NOGROUP otherwise), the other groups
// are untouched.
func (b *Bolt) ResetGroup(ctx context.Context, name string, from time.Time) error {
	var start streamID // the first entry the group delivers next
	if !from.IsZero() && from.UnixMilli() > 0 {
		start = streamID{ms: uint64(from.UnixMilli())}
	}
	err := b.update(ctx, func(tx *bbolt.Tx) error {
		if _, err := openGroup(tx, name); err != nil {
			return err
		}
		groups := tx.Bucket(bktGroups)
		if err := groups.DeleteBucket([]byte(name)); err != nil {
			return err
		}
		g, err := groups.CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		if _, err := g.CreateBucket(bktPEL); err != nil {
			return err
		}
		// Never skip what is appended after this call, whatever from says.
		last := streamID{} // none yet: the next entry is the first
		if v := tx.Bucket(bktMeta).Get(bkeyLast); v != nil {
			if last, err = idFromKey(v); err != nil {
				return fmt.Errorf("last stream id: %w", err)
			}
			last = last.succ()
		}
		if last.less(start) {
			start = last
		}
		// The group's backlog is what it has still to read: the entries
		// from start on. Everything else ever added counts as read.
		var ahead int64
		c := tx.Bucket(bktStream).Cursor()
		for k, _ := c.Seek(start.key()); k != nil; k, _ = c.Next() {
			ahead++
		}
		meta := tx.Bucket(bktMeta)
		if err := addCount(g, getCount(meta, bkeyAdded)-ahead, bkeyRead); err != nil {
			return err
		}
		if start == (streamID{}) {
			return nil // no last delivered id: Read starts at the first entry
		}
		return g.Put(bkeyLast, start.pred().key())
	})
	if err != nil {
		return fmt.Errorf("reset group %s: %w", name, err)
	}
	b.mu.Lock()
	delete(b.cursors, name)
	b.mu.Unlock()
	return nil
}

// pred returns the largest id before id; id must not be 0-0.
func (id streamID) pred() streamID {
	if id.seq == 0 {
		return streamID{ms: id.ms - 1, seq: math.MaxUint64}
	}
	return streamID{ms: id.ms, seq: id.seq - 1}
}
