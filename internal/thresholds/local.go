package thresholds

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// rebuildBatch is the batch size of the reads that rebuild the counts at
// start: each read and each acknowledgement is one synced transaction of
// the embedded buffer, so they are larger than the live ones.
const rebuildBatch = 1000

// countLocal counts a batch into the in-memory store, then acknowledges
// it. If the acknowledgement fails the entries stay pending, are delivered
// again (ReadPending) and are recognised by their ids: not counted twice.
// If the process dies between the two, the counts die with it and the next
// start counts the entries once, from the buffer (rebuild).
func (e *Engine) countLocal(ctx context.Context, entries []buffer.Entry, events []store.Event, invalid []string, realtime bool) error {
	if err := e.ev.countBatch(ctx, events, invalid, realtime); err != nil {
		return err
	}
	ids := make([]string, len(entries))
	for i, en := range entries {
		ids[i] = en.ID
	}
	if err := e.cfg.Local.Ack(ctx, e.cfg.Group, ids...); err != nil {
		return fmt.Errorf("acknowledge counted entries: %w", err)
	}
	e.mem.Forget(ids)
	return nil
}

// rebuild drops the in-memory counts and counts again every entry the
// embedded buffer retains that can still fall into a rule's window: it
// resets the thresholds group to the rebuild horizon and reads it to the
// end. The real-time path is off meanwhile; the scheduled checks that
// follow raise the alerts (again).
func (e *Engine) rebuild(ctx context.Context) error {
	group, consumer := e.cfg.Group, e.cfg.Consumer
	started := e.clock.Now()
	from := started.Add(-rebuildHorizon(e.ev.rules.Load()))
	e.mem.ResetCounts()
	if err := e.cfg.Local.EnsureGroup(ctx, group); err != nil {
		return err
	}
	if err := e.cfg.Local.ResetGroup(ctx, group, from); err != nil {
		return err
	}
	n := 0
	for {
		entries, err := e.cfg.Local.Read(ctx, group, consumer, max(e.cfg.ReadCount, rebuildBatch), 0)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			break
		}
		if err := e.processBatch(ctx, entries, false); err != nil {
			return err
		}
		n += len(entries)
	}
	e.log.Info("threshold counts rebuilt from the buffer", "entries", n,
		"since", from.UTC().Format(time.RFC3339), "took", e.clock.Since(started).String())
	return nil
}

// rebuildUntilDone rebuilds, retrying every second, until it succeeds
// (true) or ctx ends (false).
func (e *Engine) rebuildUntilDone(ctx context.Context) bool {
	for {
		err := e.rebuild(ctx)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		e.log.Warn("rebuild threshold counts from the buffer", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-e.clock.After(time.Second):
		}
	}
}

// rebuildHorizon is how far back, in the buffer's append time, an entry
// can still count in a window: the longest window plus one bucket (a window
// spans up to one bucket more), plus store.KeyGrace twice, for the skew between
// Auth0's dates and the buffer's clock and for the keys' own grace. An
// event is appended after it happened, so an entry appended before the
// horizon is dated before it too.
func rebuildHorizon(rs *rules.Set) time.Duration {
	var h time.Duration
	for _, r := range rs.Rules {
		h = max(h, r.Window+r.Bucket())
	}
	return h + 2*store.KeyGrace
}

// checkRetention warns when the embedded buffer keeps raw logs for less
// time than the rebuild horizon: counts rebuilt at start then miss the
// oldest part of the longest windows.
func checkRetention(lb LocalBuffer, rs *rules.Set, log *slog.Logger) {
	c, ok := lb.(interface{ Config() buffer.Config })
	if !ok {
		return
	}
	if ret, need := c.Config().Retention, rebuildHorizon(rs); ret < need {
		log.Warn("buffer retention is shorter than the longest threshold window: after a restart the oldest part of that window is not counted",
			"retention", ret.String(), "needed", need.String())
	}
}
