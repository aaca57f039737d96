package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/metrics"
)

// Dead-letter reason kinds: the reason label of
// authpipe_dead_letters_total. A reason passed to DeadLetter is counted
// under the kind it starts with ("oversize: 40 KB > 32 KB"), else under
// ReasonOther; Reason builds such a string.
const (
	ReasonSegmentRejected = "segment_rejected"
	ReasonInvalid         = "invalid"
	ReasonOversize        = "oversize"
	ReasonMaxDeliveries   = "max_deliveries"
	ReasonOther           = "other"
)

var reasonKinds = []string{ReasonSegmentRejected, ReasonInvalid, ReasonOversize, ReasonMaxDeliveries, ReasonOther}

// Reason returns a dead-letter reason of the given kind: "kind: detail".
func Reason(kind, detail string) string {
	if detail == "" {
		return kind
	}
	return kind + ": " + detail
}

// reasonKind classifies a DeadLetter reason by its leading kind.
func reasonKind(reason string) string {
	head, _, _ := strings.Cut(reason, ":")
	if head = strings.TrimSpace(head); slices.Contains(reasonKinds, head) {
		return head
	}
	return ReasonOther
}

// statsTimeout bounds the Redis queries of one scrape.
const statsTimeout = 2 * time.Second

type bufferMetrics struct {
	stage       metrics.Stage
	duplicates  prometheus.Counter
	deadLetters *prometheus.CounterVec
	trimmed     prometheus.Counter
	lost        prometheus.Counter
	replayed    prometheus.Counter
	dropped     prometheus.Counter
}

// newMetrics registers the buffer's counters on reg. reg is the tenant's:
// the caller adds the tenant label (metrics.Tenant, in
// package pipeline), so buffers of several tenants share one registry.
func newMetrics(reg prometheus.Registerer, stages *metrics.Stages) *bufferMetrics {
	f := promauto.With(reg)
	m := &bufferMetrics{
		stage: stages.For(metrics.StageBuffer),
		duplicates: f.NewCounter(prometheus.CounterOpts{
			Name: "authpipe_buffer_duplicates_total",
			Help: "Logs offered to the buffer that were already stored (same log_id), not stored again.",
		}),
		deadLetters: f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_dead_letters_total",
			Help: "Entries moved to the dead-letter stream, by reason.",
		}, []string{"reason"}),
		trimmed: f.NewCounter(prometheus.CounterOpts{
			Name: "authpipe_buffer_trimmed_total",
			Help: "Stream entries removed by trimming: acknowledged by every consumer group (or, while the stream has no group, older than the retention).",
		}),
		lost: f.NewCounter(prometheus.CounterOpts{
			Name: "authpipe_buffer_lost_total",
			Help: "Pending entries found deleted from the stream before acknowledgement. Must stay 0.",
		}),
		replayed: f.NewCounter(prometheus.CounterOpts{
			Name: "authpipe_dead_letters_replayed_total",
			Help: "Dead letters re-appended to the stream by an operator (authpipe dlq replay, admin API).",
		}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "authpipe_dead_letters_dropped_total",
			Help: "Dead letters deleted for good by an operator (authpipe dlq drop, admin API).",
		}),
	}
	for _, k := range reasonKinds {
		m.deadLetters.WithLabelValues(k)
	}
	return m
}

// gauges are the figures behind the buffer's gauges, read at scrape time.
type gauges struct {
	backlog, pending, length, deadLetters int64
	dedupe                                int64 // log_ids in the dedupe record
}

// gaugeSource reads the gauges of one backend.
type gaugeSource func(ctx context.Context) (gauges, error)

// statsCollector reports the buffer's gauges, queried from the backend at
// scrape time (bounded by statsTimeout), so they need no loop. When the
// query fails (Redis unreachable) the gauges keep the values of the last
// query that succeeded, never a 0 and never a gap: a panel keeps its line
// and AuthpipeBacklogGrowing and AuthpipeDeadLetters keep evaluating.
// authpipe_buffer_up says whether this scrape's query succeeded and
// authpipe_buffer_stats_last_success_timestamp_seconds how old the kept
// values are (0 and 0 until a query has succeeded; the gauges are then 0).
// A failure is logged once, when it starts, and the recovery once. Both
// backends share it, so their gauges have the same names and labels.
type statsCollector struct {
	source                                gaugeSource
	log                                   *slog.Logger
	clock                                 clockwork.Clock
	backlog, pending, stream, deadLetters *prometheus.Desc
	dedupe, up, lastSuccess               *prometheus.Desc

	mu     sync.Mutex // concurrent scrapes
	last   gauges     // values of the last successful query
	lastOK time.Time  // when it ran; zero: never
	failed bool       // the last query failed
}

func newStatsCollector(log *slog.Logger, clock clockwork.Clock, source gaugeSource) *statsCollector {
	return &statsCollector{
		source: source,
		log:    log,
		clock:  clock,
		backlog: prometheus.NewDesc("authpipe_buffer_backlog_events",
			"Entries not yet acknowledged by the slowest consumer group (undelivered + pending); the stream length while no group exists.", nil, nil),
		pending: prometheus.NewDesc("authpipe_buffer_pending_events",
			"Entries delivered but not yet acknowledged, summed over consumer groups.", nil, nil),
		stream: prometheus.NewDesc("authpipe_buffer_stream_events",
			"Entries in the stream (acknowledged ones included, until trimmed).", nil, nil),
		deadLetters: prometheus.NewDesc("authpipe_dead_letter_events",
			"Entries in the dead-letter stream.", nil, nil),
		dedupe: prometheus.NewDesc("authpipe_buffer_dedupe_entries",
			"log_ids in the dedupe record (kept for the retention, after their entries left the stream).", nil, nil),
		up: prometheus.NewDesc("authpipe_buffer_up",
			"1 if the buffer (Redis, or the embedded buffer's file) answered this scrape's statistics query, 0 if it did not.", nil, nil),
		lastSuccess: prometheus.NewDesc("authpipe_buffer_stats_last_success_timestamp_seconds",
			"When the buffer last answered the statistics query behind the buffer gauges (0: never). While it does not answer, "+
				"authpipe_buffer_backlog_events, _pending_events, _stream_events, _dedupe_entries and authpipe_dead_letter_events keep the values read then.", nil, nil),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.backlog
	ch <- c.pending
	ch <- c.stream
	ch <- c.deadLetters
	ch <- c.dedupe
	ch <- c.up
	ch <- c.lastSuccess
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	g, err := c.source(ctx)

	c.mu.Lock()
	switch {
	case err == nil:
		if c.failed {
			c.log.Info("buffer answers the statistics query again", "unanswered_for", c.clock.Since(c.lastOK).Round(time.Second).String())
		}
		c.last, c.lastOK, c.failed = g, c.clock.Now(), false
	case !c.failed:
		c.failed = true
		c.log.Warn("buffer stats for metrics; keeping the last values until the buffer answers", "err", err)
	}
	g, lastOK, up := c.last, c.lastOK, !c.failed
	c.mu.Unlock()

	var since float64
	if !lastOK.IsZero() {
		since = float64(lastOK.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(g.backlog))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(g.pending))
	ch <- prometheus.MustNewConstMetric(c.stream, prometheus.GaugeValue, float64(g.length))
	ch <- prometheus.MustNewConstMetric(c.deadLetters, prometheus.GaugeValue, float64(g.deadLetters))
	ch <- prometheus.MustNewConstMetric(c.dedupe, prometheus.GaugeValue, float64(g.dedupe))
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolGauge(up))
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, since)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// registerGauges registers a backend's gauges. It fails (rather than
// panics, as the counters of newMetrics would) when buffer metrics exist
// on the registerer already (a second buffer of the same tenant), so call
// it first.
func registerGauges(reg prometheus.Registerer, tenant string, log *slog.Logger, clock clockwork.Clock, source gaugeSource) error {
	if err := reg.Register(newStatsCollector(log, clock, source)); err != nil {
		return fmt.Errorf("register buffer gauges for tenant %s: %w", tenant, err)
	}
	return nil
}

// gauges reads the Redis backend's gauges in one transaction.
func (b *Redis) gauges(ctx context.Context) (gauges, error) {
	s, err := b.snapshot(ctx)
	if err != nil {
		return gauges{}, err
	}
	dedupe, err := b.dedupeEntries(ctx)
	if err != nil {
		return gauges{}, err
	}
	backlog, pending := s.aggregate()
	return gauges{backlog: backlog, pending: pending, length: s.length, deadLetters: s.deadLetters, dedupe: dedupe}, nil
}
