package forward

import (
	"context"
	"log/slog"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
)

// readLoop redelivers this consumer's own pending entries, then reads new
// entries and, every ReclaimIdle/2, takes over entries idle in other
// consumers (crashed replicas), always within MaxInFlight.
//
// What it reads is admitted (mapped and enqueued) by a goroutine of its own,
// so that the next read is on its way while a batch is mapped: in a catch-up
// the forwarder's rate is that of this loop, and a read of 500 entries is a
// few milliseconds of waiting for Redis. Entries read and not yet admitted
// count against MaxInFlight (reserved); readLoop returns once everything it
// read has been admitted.
func (f *Forwarder) readLoop(ctx, bg context.Context) {
	batches := make(chan []buffer.Entry)
	admitted := make(chan struct{})
	go func() {
		defer close(admitted)
		for es := range batches {
			f.admit(bg, es, f.clock.Now())
			f.unreserve(len(es))
		}
	}()
	defer func() {
		close(batches)
		<-admitted
	}()
	hand := func(es []buffer.Entry) {
		if len(es) == 0 {
			return
		}
		f.reserve(len(es))
		batches <- es
	}

	f.recoverPending(ctx, bg, hand)
	nextReclaim := f.clock.Now()
	block := min(readBlock, f.cfg.ReclaimIdle/2)
	for ctx.Err() == nil {
		free := f.waitSpace(ctx)
		if free == 0 {
			return
		}
		if now := f.clock.Now(); !now.Before(nextReclaim) {
			f.reclaim(ctx, hand)
			nextReclaim = now.Add(f.cfg.ReclaimIdle / 2)
			continue
		}
		entries, err := f.buf.Read(ctx, f.cfg.Group, f.cfg.Consumer, min(free, f.cfg.ReadCount), block)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.rep.Fail(ctx, "read buffer", slog.LevelWarn, "read buffer", err)
			f.sleep(ctx, readErrorWait)
			continue
		}
		f.rep.OK(ctx, "read buffer")
		hand(entries)
	}
}

// recoverPending forwards the entries this consumer had read before it
// restarted and never acknowledged.
func (f *Forwarder) recoverPending(ctx, bg context.Context, hand func([]buffer.Entry)) {
	after, total := "0", 0
	for ctx.Err() == nil {
		free := f.waitSpace(ctx)
		if free == 0 {
			return
		}
		entries, err := f.buf.ReadPending(ctx, f.cfg.Group, f.cfg.Consumer, after, min(free, f.cfg.ReadCount))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.rep.Fail(ctx, "read own pending entries", slog.LevelWarn, "read own pending entries", err)
			f.sleep(ctx, readErrorWait)
			continue
		}
		f.rep.OK(ctx, "read own pending entries")
		if len(entries) == 0 {
			break
		}
		after = entries[len(entries)-1].ID
		total += len(entries)
		// Reading history does not reset the idle time: claim them back
		// before another replica's reclaim does.
		f.touch(bg, entryIDs(entries))
		hand(entries)
	}
	if total > 0 {
		f.log.Info("redelivering own pending entries from before restart", "entries", total)
	}
}

// reclaim takes over entries idle for ReclaimIdle in any consumer.
func (f *Forwarder) reclaim(ctx context.Context, hand func([]buffer.Entry)) {
	for range 10 {
		free := f.freeSlots()
		if free <= 0 || ctx.Err() != nil {
			return
		}
		count := min(free, reclaimCount)
		entries, err := f.buf.Reclaim(ctx, f.cfg.Group, f.cfg.Consumer, f.cfg.ReclaimIdle, count)
		if err != nil {
			if ctx.Err() == nil {
				f.rep.Fail(ctx, "reclaim idle entries", slog.LevelWarn, "reclaim idle entries", err)
			}
			return
		}
		f.rep.OK(ctx, "reclaim idle entries")
		if len(entries) > 0 {
			f.log.Info("reclaimed idle pending entries", "entries", len(entries))
		}
		hand(entries)
		if len(entries) < count {
			return
		}
	}
}

func (f *Forwarder) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-f.clock.After(d):
	}
}
