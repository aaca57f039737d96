package auth0poll

import (
	"time"
)

// minBehindLag is the least lag at which a poller that had caught up counts
// as behind again (with at least three poll intervals): a burst that fills a
// page or two, or one slow request, is not falling behind.
const minBehindLag = time.Minute

// progress is what the poll loop logs about its position relative to the
// head of Auth0's logs: one line when it falls behind, one when it has
// caught up (with what it fetched on the way), and, after a first start
// without a checkpoint, one line when the backfill of the retention window
// is done. Each transition is logged once, never every poll. Owned by Run's
// goroutine.
type progress struct {
	behind  bool
	since   time.Time // start of the catch-up: Run's start, or when the lag grew
	fetched int       // events appended during the catch-up
	added   int       // of those, new to the buffer

	backfill      bool      // the catch-up is the first start's backfill of the retention window
	backfillSince time.Time // its window's start
}

// startProgress begins the catch-up of a (re)started poll loop; window is
// the start of the retention window when no checkpoint was stored, else zero.
func (p *Poller) startProgress(window time.Time) {
	p.prog = progress{behind: true, since: p.clock.Now(), backfill: !window.IsZero(), backfillSince: window}
}

// noteAppended counts a page appended during a catch-up.
func (p *Poller) noteAppended(fetched, added int) {
	if p.prog.behind {
		p.prog.fetched += fetched
		p.prog.added += added
	}
}

// checkBehind marks the loop behind once the lag exceeds the larger of
// minBehindLag and three poll intervals (the slow one while a Log Stream is
// healthy): Auth0 or the buffer failed, the buffer was full, or traffic
// outran the pacing.
func (p *Poller) checkBehind() {
	if p.prog.behind {
		return
	}
	lag := p.clock.Since(p.position())
	if p.position().IsZero() || lag <= max(minBehindLag, 3*p.cfg.PollInterval, 3*p.idleLongest) {
		return
	}
	p.prog = progress{behind: true, since: p.clock.Now()}
	p.log.Info("auth0 poller behind the head of the logs; catching up", "lag", lag.Round(time.Second).String(), "checkpoint", p.cp)
}

// reachedHead is called when a poll returned a short page, started at
// start: the loop has every log Auth0 had then.
func (p *Poller) reachedHead(start time.Time) {
	if !p.prog.behind {
		return
	}
	pr := p.prog
	p.prog = progress{}
	took := p.clock.Since(pr.since).Round(time.Millisecond).String()
	if pr.backfill {
		p.log.Info("auth0 backfill done", "backfill_since", pr.backfillSince.UTC(), "backfill_until", start.UTC(),
			"fetched", pr.fetched, "added", pr.added, "duplicates", pr.fetched-pr.added, "took", took)
	}
	p.log.Info("auth0 poller caught up", "fetched", pr.fetched, "added", pr.added, "duplicates", pr.fetched-pr.added,
		"took", took, "checkpoint", p.cp)
}
