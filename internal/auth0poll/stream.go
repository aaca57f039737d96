package auth0poll

import (
	"context"
	"log/slog"
	"time"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// Stream is the tenant's Auth0 Log Stream as the poller sees it: how
// recently it delivered, and the logs the poller found before it did.
// *auth0stream.Watch implements it.
type Stream interface {
	// LastEvent returns when the stream last delivered events; false
	// before the first.
	LastEvent() (time.Time, bool)
	// PolledFirst is told, before the poller appends a page, the logs of
	// that page the buffer did not hold: the poller, not the stream,
	// delivers them first. at is the poller's clock.
	PolledFirst(logs []auth0log.Log, at time.Time)
}

// Seer is the buffer's read of its dedupe record (buffer.Redis.Seen,
// buffer.Bolt.Seen), asked before each append while a Stream is set.
type Seer interface {
	Seen(ctx context.Context, ids []string) ([]bool, error)
}

// actSeen keys the summarised failures of the dedupe read.
const actSeen = "read dedupe record"

// streamHealthy reports whether the stream delivered within the healthy
// window at now, and until when it stays healthy without another delivery.
func (p *Poller) streamHealthy(now time.Time) (bool, time.Time) {
	if p.stream == nil {
		return false, time.Time{}
	}
	last, ok := p.stream.LastEvent()
	if !ok {
		return false, time.Time{}
	}
	until := last.Add(p.cfg.StreamHealthyWindow)
	return now.Before(until), until
}

// idleInterval is the wait after a poll that found Auth0 caught up:
// StreamPollInterval while the stream is healthy, else PollInterval.
func (p *Poller) idleInterval(now time.Time) time.Duration {
	if healthy, _ := p.streamHealthy(now); healthy {
		return p.cfg.StreamPollInterval
	}
	return p.cfg.PollInterval
}

// sleepIdle waits until the next poll after a caught-up poll that started
// at from: the interval the stream's health calls for, decided again
// whenever the stream's healthy window ends. A stream that falls silent
// brings the poller back to PollInterval within one PollInterval, not
// after the rest of the slow wait. False when ctx ended first.
func (p *Poller) sleepIdle(ctx context.Context, from time.Time) bool {
	p.idleLongest = 0
	for {
		now := p.clock.Now()
		healthy, until := p.streamHealthy(now)
		interval := p.cfg.PollInterval
		if healthy {
			interval = p.cfg.StreamPollInterval
		}
		p.setInterval(interval)
		p.idleLongest = max(p.idleLongest, interval)
		due := from.Add(interval)
		if !due.After(now) {
			return true
		}
		d := due.Sub(now)
		if healthy && until.Before(due) {
			d = until.Sub(now)
		}
		if !p.sleep(ctx, d) {
			return false
		}
	}
}

// setInterval exports the idle interval in force and logs when it changes.
func (p *Poller) setInterval(d time.Duration) {
	if d == p.interval {
		return
	}
	prev := p.interval
	p.interval = d
	p.m.interval.Set(d.Seconds())
	if prev == 0 || p.stream == nil {
		return
	}
	if d == p.cfg.StreamPollInterval && d != p.cfg.PollInterval {
		p.log.Info("log stream healthy: polling at the slow interval", "interval", d.String(),
			"healthy_window", p.cfg.StreamHealthyWindow.String())
	} else {
		p.log.Warn("log stream silent: polling at the normal interval", "interval", d.String(),
			"healthy_window", p.cfg.StreamHealthyWindow.String())
	}
}

// unseen returns, when a Stream is set, the logs of a page the buffer does
// not hold yet: asked before the append, told to the stream after it
// succeeded. Logs up to the end of a window the buffer lost and is polled
// again are left out (the dedupe record went with the data: they were
// stored before). A failed read only leaves the page uncounted: the append
// is what matters, and is not held up.
func (p *Poller) unseen(ctx context.Context, logs []auth0log.Log) []auth0log.Log {
	if p.stream == nil || p.seer == nil {
		return nil
	}
	ids := make([]string, 0, len(logs))
	for _, l := range logs {
		if l.ID > p.repollUntil {
			ids = append(ids, l.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	seen, err := p.seer.Seen(ctx, ids)
	if err != nil {
		if ctx.Err() == nil {
			p.rep.Fail(ctx, actSeen, slog.LevelWarn, "read dedupe record; this page is left out of the stream's missed count", err, "events_in_page", len(logs))
		}
		return nil
	}
	p.recovered(ctx, actSeen)
	first := make([]auth0log.Log, 0, len(ids))
	j := 0
	for _, l := range logs {
		if l.ID <= p.repollUntil {
			continue
		}
		if !seen[j] {
			first = append(first, l)
		}
		j++
	}
	return first
}
