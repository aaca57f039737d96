package buffer

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"time"

	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Trim removes every stream entry that every consumer group has
// acknowledged, but never one still pending in a group or not yet delivered
// to a group: it removes entries below the smallest of every group's oldest
// pending id and every group's first undelivered id (while there is no
// group, below now − Retention), each transaction computing the bound and
// deleting up to trimChunk entries. It also forgets the dedupe record's hour
// buckets (and the previous layout's log_ids) older than the retention
// (Auth0 no longer serves those). It returns how many stream entries it
// removed. bbolt reuses the pages it frees; once at least half of a file
// of CompactMinBytes or more is free pages, Trim compacts it (the disk then
// follows the backlog down, not only up).
func (b *Bolt) Trim(ctx context.Context) (int64, error) {
	now := b.clock.Now()
	cutoff := max(now.Add(-b.cfg.Retention).UnixMilli(), 0)
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
			below := func(k []byte) bool { return mustID(k).less(bound) }
			if trimmed, err = deleteFront(tx.Bucket(bktStream), below); err != nil {
				return err
			}
			if err := addCount(tx.Bucket(bktMeta), -int64(trimmed), bkeyLength); err != nil {
				return err
			}
			// Reasons noted for entries below the bound are stale (noted
			// after the entry was acknowledged): no group holds them.
			if stale, err = deleteFront(tx.Bucket(bktReasons), below); err != nil {
				return err
			}
			var dropped, legacy int
			if forgotten, dropped, err = dedupeOf(tx).dropExpired(tx.Bucket(bktMeta), now.Add(-b.cfg.Retention)); err != nil {
				return err
			}
			if legacy, err = deleteFront(tx.Bucket(bktSeen), func(k []byte) bool { return bytes.Compare(k, seenBound) < 0 }); err != nil {
				return err
			}
			forgotten += legacy
			if trimmed == 0 && forgotten == 0 && stale == 0 && dropped == 0 {
				return errNoChange
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("trim buffer: %w", err)
		}
		if trimmed > 0 {
			// Deleting read up to trimChunk entries' pages through the
			// file's mapping: release them now, as consumers' reads do
			// (residentFile), or a trim of a large backlog would leave
			// them all resident.
			b.releasePages()
		}
		total += int64(trimmed)
		seenTotal += int64(forgotten)
		b.m.trimmed.Add(float64(trimmed))
		if trimmed < trimChunk && forgotten < trimChunk && stale < trimChunk {
			b.log.Debug("buffer trimmed", "minid", bound.String(), "trimmed", total, "seen_removed", seenTotal)
			return total, b.maybeCompact()
		}
	}
}

// trimBound is the smallest id Trim must keep: every group's first
// undelivered entry and every group's oldest pending entry; the cutoff
// when there is no group.
func (b *Bolt) trimBound(tx *bbolt.Tx, cutoff uint64) (streamID, error) {
	bound := streamID{ms: math.MaxUint64, seq: math.MaxUint64}
	groups := 0
	err := tx.Bucket(bktGroups).ForEachBucket(func(name []byte) error {
		groups++
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
	if groups == 0 {
		bound = streamID{ms: cutoff}
	}
	return bound, err
}

// deleteFront deletes up to trimChunk keys from the start of bk while
// below accepts them (keys are sorted: it stops at the first it rejects)
// and returns how many it deleted.
func deleteFront(bk *bbolt.Bucket, below func(k []byte) bool) (int, error) {
	var keys [][]byte
	c := bk.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < trimChunk && below(k); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := bk.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
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
	var dedupe int64
	if err := b.view(func(tx *bbolt.Tx) error { dedupe = dedupeOf(tx).count(tx.Bucket(bktMeta)); return nil }); err != nil {
		return gauges{}, fmt.Errorf("count dedupe record: %w", err)
	}
	return gauges{backlog: backlog, pending: pending, length: s.length, deadLetters: s.deadLetters, dedupe: dedupe}, nil
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
