package status

import (
	"context"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/metrics"
)

// DefaultProgressInterval is how often Progress logs while work flows.
const DefaultProgressInterval = 5 * time.Minute

// Progress writes the process's progress to the log: every interval, one
// INFO line per tenant whose pipeline moved since the line before (events
// polled, forwarded, acknowledged by Segment, dead-lettered), with the
// backlog and the checkpoint lag. A tenant where nothing moved gets no line,
// so an idle worker's log stays quiet. The figures are the registry's, as
// on the status page and /metrics.
type Progress struct {
	g        prometheus.Gatherer
	log      *slog.Logger
	clock    clockwork.Clock
	interval time.Duration

	prev   map[string]moved // by tenant, at the last report
	prevAt time.Time
}

// moved is what a tenant's counters held at a report.
type moved struct {
	polled, forwarded, acked, deadLettered float64
}

// NewProgress returns a Progress reading g and logging with component
// "progress". A nil log or clock gets inject's default; a non-positive
// interval is DefaultProgressInterval.
func NewProgress(g prometheus.Gatherer, log *slog.Logger, clock clockwork.Clock, interval time.Duration) *Progress {
	inject.Defaults(&log, nil, &clock)
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	return &Progress{g: g, log: log.With("component", "progress"), clock: clock, interval: interval}
}

// Run reports every interval until ctx ends. The counters at its start are
// the baseline: the first line covers the first interval.
func (p *Progress) Run(ctx context.Context) error {
	p.Report(ctx)
	t := p.clock.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			p.Report(ctx)
		}
	}
}

// Report logs a line for each tenant whose counters moved since the last
// Report (none on the first call, which takes the baseline).
func (p *Progress) Report(ctx context.Context) {
	s, err := Snapshot(p.g)
	if err != nil {
		// Figures of collectors that answered are still in s; one that
		// failed shows as absent (0) in this line only.
		p.log.DebugContext(ctx, "progress: gather metrics", "err", err)
	}
	now := p.clock.Now()
	first, over := p.prev == nil, now.Sub(p.prevAt).Round(time.Second)
	cur := make(map[string]moved, len(s.Tenants))
	for _, t := range s.Tenants {
		m := moved{polled: t.Polled, acked: t.Acked}
		for _, st := range t.Stages {
			switch st.Name {
			case metrics.StageForward:
				m.forwarded = st.Written
			case metrics.StageBuffer:
				m.deadLettered = st.Failed
			}
		}
		cur[t.Name] = m
		if first {
			continue
		}
		before := p.prev[t.Name]
		d := moved{
			polled:       delta(m.polled, before.polled),
			forwarded:    delta(m.forwarded, before.forwarded),
			acked:        delta(m.acked, before.acked),
			deadLettered: delta(m.deadLettered, before.deadLettered),
		}
		if d == (moved{}) {
			continue
		}
		p.log.InfoContext(ctx, "progress",
			"tenant", t.Name, "interval", over.String(),
			"polled", int64(d.polled), "forwarded", int64(d.forwarded), "acked", int64(d.acked), "dead_lettered", int64(d.deadLettered),
			"backlog", int64(t.Backlog), "pending", int64(t.Pending),
			"checkpoint_lag", (time.Duration(t.CheckpointLagSeconds) * time.Second).String())
	}
	p.prev, p.prevAt = cur, now
}

// delta is a counter's growth; a counter that went down was reset and
// counts from 0.
func delta(now, before float64) float64 {
	if now < before {
		return now
	}
	return now - before
}
