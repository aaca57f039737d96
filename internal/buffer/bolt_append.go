package buffer

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/authpipe/authpipe/internal/auth0log"
)

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
		meta, stream, seen := tx.Bucket(bktMeta), tx.Bucket(bktStream), dedupeOf(tx)
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
			if seen.has(l.ID) {
				continue
			}
			last = last.next(now)
			if err := stream.Put(last.key(), encodeEntry(l.ID, l.Raw, l.Pack())); err != nil {
				return err
			}
			if err := seen.add(l.ID); err != nil {
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
			if err := addCount(meta, int64(added), bkeyAdded, bkeyLength, bkeyDedupe); err != nil {
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
		// The append read the pages it changed through the mapping.
		n := 0
		for _, l := range logs {
			n += len(l.Raw)
		}
		b.noteRead(n)
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
