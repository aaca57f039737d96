package forward

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
)

// ack acknowledges the entries of accepted messages. A failed ack leaves
// them pending: they are reclaimed and re-sent, and Segment drops the copy.
func (f *Forwarder) ack(bg context.Context, items []*item) {
	if len(items) == 0 {
		return
	}
	var ids []string
	f.mu.Lock()
	for _, it := range items {
		for _, e := range it.entries {
			ids = append(ids, e.ID)
		}
	}
	f.mu.Unlock()
	for chunk := range slices.Chunk(ids, touchChunk) {
		ctx, cancel := context.WithTimeout(bg, redisTimeout)
		err := f.buf.Ack(ctx, f.cfg.Group, chunk...)
		cancel()
		if err != nil {
			f.rep.Fail(bg, "ack", slog.LevelError, "acknowledge entries Segment accepted: they stay pending and are re-sent (Segment drops the duplicates)",
				err, "entries", len(chunk))
			continue
		}
		f.rep.OK(bg, "ack")
		f.m.acked.Add(float64(len(chunk)))
	}
	for _, it := range items {
		f.forget(it)
	}
}

// ackFiltered acknowledges the entries the filter left out, by reason: they
// are resolved without Segment and count as acked in the forward stage, never
// as written. A failed ack leaves them pending; they are filtered again when
// redelivered.
func (f *Forwarder) ackFiltered(bg context.Context, byReason map[string][]string) {
	for _, reason := range filterReasons {
		for chunk := range slices.Chunk(byReason[reason], touchChunk) {
			ctx, cancel := context.WithTimeout(bg, redisTimeout)
			err := f.buf.Ack(ctx, f.cfg.Group, chunk...)
			cancel()
			if err != nil {
				f.rep.Fail(bg, "ack filtered", slog.LevelWarn, "acknowledge filtered entries: they stay pending and are filtered again when redelivered",
					err, "entries", len(chunk), "reason", reason)
				continue
			}
			f.rep.OK(bg, "ack filtered")
			f.m.filtered[reason].Add(float64(len(chunk)))
			f.stage.Acked.Add(float64(len(chunk)))
		}
	}
}

// deadLetter moves entries to the dead-letter stream with reason. A failure
// leaves them pending (another delivery will try again).
func (f *Forwarder) deadLetter(bg context.Context, entries []buffer.Entry, reason string) {
	for _, e := range entries {
		ctx, cancel := context.WithTimeout(bg, redisTimeout)
		err := f.buf.DeadLetter(ctx, f.cfg.Group, e, reason)
		cancel()
		if err != nil {
			f.rep.Fail(bg, "dead-letter", slog.LevelError, "dead-letter entry: it stays pending and is retried", err, "entry", e.ID, "log_id", e.LogID)
			continue
		}
		f.rep.OK(bg, "dead-letter")
		f.log.Warn("event dead-lettered", "entry", e.ID, "log_id", e.LogID, "reason", reason)
	}
}

// heartbeatLoop touches held entries so that no replica's reclaim takes them
// while this one is still retrying them.
func (f *Forwarder) heartbeatLoop(bg context.Context, stop <-chan struct{}) {
	stale := f.cfg.ReclaimIdle / 3
	tick := f.clock.NewTicker(max(stale/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.Chan():
			f.touchStale(bg, stale)
		}
	}
}

func (f *Forwarder) touchStale(bg context.Context, stale time.Duration) {
	now := f.clock.Now()
	var items []*item
	var ids []string
	f.mu.Lock()
	for _, it := range f.items {
		if now.Sub(it.touched) >= stale {
			items = append(items, it)
			for _, e := range it.entries {
				ids = append(ids, e.ID)
			}
		}
	}
	f.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if f.touch(bg, ids) {
		f.mu.Lock()
		for _, it := range items {
			it.touched = now
		}
		f.mu.Unlock()
	}
}

// touch resets the idle time of entries; it reports whether all succeeded.
func (f *Forwarder) touch(bg context.Context, ids []string) bool {
	ok := true
	for chunk := range slices.Chunk(ids, touchChunk) {
		ctx, cancel := context.WithTimeout(bg, redisTimeout)
		err := f.buf.Touch(ctx, f.cfg.Group, f.cfg.Consumer, chunk...)
		cancel()
		if err != nil {
			ok = false
			f.rep.Fail(bg, "touch", slog.LevelWarn, "touch held entries: another replica may reclaim them (duplicates are dropped by messageId)",
				err, "entries", len(chunk))
			continue
		}
		f.rep.OK(bg, "touch")
	}
	return ok
}

func entryIDs(entries []buffer.Entry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	return ids
}
