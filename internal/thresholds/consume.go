package thresholds

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

func (e *Engine) reader() GroupReader {
	if e.cfg.Local != nil {
		return e.cfg.Local
	}
	return e.cfg.Buffer
}

// consume reads the tenant's stream with the thresholds group and counts
// every entry. A restarted consumer first counts what it held when it
// stopped; entries of consumers that died are reclaimed after ReclaimIdle.
// On the embedded buffer Run has rebuilt the counts already; a group found
// missing later is rebuilt the same way, and expired counts are pruned.
func (e *Engine) consume(ctx context.Context) {
	group, consumer := e.cfg.Group, e.cfg.Consumer
	buf := e.reader()
	ready, recover := e.mem != nil, true
	lastReclaim := e.clock.Now()
	// step reports whether a step of the loop succeeded. A failure is a
	// buffer error: logged (repeats summarised), then a second's pause.
	step := func(what string, err error) bool {
		if err == nil {
			e.rep.OK(ctx, what)
			return true
		}
		if ctx.Err() == nil {
			e.bufferFailed()
			e.rep.Fail(ctx, what, slog.LevelWarn, what, err)
			select {
			case <-ctx.Done():
			case <-e.clock.After(time.Second):
			}
		}
		return false
	}
	for ctx.Err() == nil {
		if !ready {
			var err error
			if e.mem != nil {
				err = e.rebuild(ctx)
			} else {
				err = buf.EnsureGroup(ctx, group)
			}
			if !step("prepare consumer group", err) {
				continue
			}
			ready = true
		}
		if recover {
			if !step("count pending entries", e.drainPending(ctx, group, consumer)) {
				continue
			}
			recover = false
		}
		if e.mem != nil {
			e.mem.Prune(e.clock.Now())
		}
		entries, err := buf.Read(ctx, group, consumer, e.cfg.ReadCount, e.cfg.ReadBlock)
		if err == nil && len(entries) > 0 {
			err = e.process(ctx, entries)
		}
		if err != nil && strings.Contains(err.Error(), "NOGROUP") {
			ready = false
		}
		if !step("count entries", err) {
			recover = true // what was read stays pending with us: count it again
			continue
		}
		if e.clock.Since(lastReclaim) >= e.cfg.ReclaimIdle/2 {
			lastReclaim = e.clock.Now()
			if err := e.reclaim(ctx, group, consumer); err != nil && ctx.Err() == nil {
				e.rep.Fail(ctx, "reclaim entries", slog.LevelWarn, "reclaim entries", err)
			} else if err == nil {
				e.rep.OK(ctx, "reclaim entries")
			}
		}
	}
}

func (e *Engine) drainPending(ctx context.Context, group, consumer string) error {
	after := "0"
	for {
		entries, err := e.reader().ReadPending(ctx, group, consumer, after, e.cfg.ReadCount)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return nil
		}
		if err := e.process(ctx, entries); err != nil {
			return err
		}
		after = entries[len(entries)-1].ID
	}
}

func (e *Engine) reclaim(ctx context.Context, group, consumer string) error {
	for range 10 {
		entries, err := e.reader().Reclaim(ctx, group, consumer, e.cfg.ReclaimIdle, e.cfg.ReadCount)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return nil
		}
		if err := e.process(ctx, entries); err != nil {
			return err
		}
	}
	return nil
}

// process counts a batch of entries and acknowledges them: in one script
// on Redis, counted in memory then acknowledged on the embedded buffer.
func (e *Engine) process(ctx context.Context, entries []buffer.Entry) error {
	return e.processBatch(ctx, entries, e.ev.realtime)
}

func (e *Engine) processBatch(ctx context.Context, entries []buffer.Entry, realtime bool) error {
	if len(entries) == 0 {
		return nil
	}
	events := make([]store.Event, 0, len(entries))
	var invalid []string
	for _, en := range entries {
		l, err := en.Log() // the fields parsed when the event was buffered
		if err != nil {
			invalid = append(invalid, en.ID)
			continue
		}
		events = append(events, store.NewEvent(en.ID, l))
	}
	if len(invalid) > 0 {
		e.log.Warn("undecodable entries acknowledged without counting", "entries", len(invalid))
	}
	if e.mem == nil {
		return e.ev.countBatch(ctx, events, invalid, realtime)
	}
	return e.countLocal(ctx, entries, events, invalid, realtime)
}
