package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/logrepeat"
)

// ErrUnavailable is what Record's error matches when no sink took the
// entries: the caller must not act, nor show anything.
var ErrUnavailable = errors.New("no audit sink took the entry")

// MaxPending bounds the entries a sink keeps for a later write while it
// fails; beyond it the oldest are dropped and a gap entry says how many.
const MaxPending = 10000

// Sink is where entries are written: each sink keeps its own hash chain.
type Sink interface {
	// Name is the sink's label in the metrics (LogSinkName, RedisSinkName).
	Name() string
	// Append writes e as the next entry of the sink's chain: it sets e's
	// Seq and Prev, and returns once the line is stored durably.
	Append(ctx context.Context, e Entry) error
}

// Deps are the trail's collaborators; zero values get defaults (a
// discarding logger, a fresh registry, the real clock).
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	// Host names the writer in gap entries.
	Host string
}

// Trail writes entries to its sinks, fail-closed: Record reports whether
// at least one sink stored an entry, and the caller acts only then. A sink
// that fails keeps what it missed (up to MaxPending entries) and writes it,
// in order and before anything newer, as soon as it works again (at the
// next Record, Defer or Flush), so its trail ends up complete.
type Trail struct {
	log   *slog.Logger
	rep   *logrepeat.Summarizer // a failing sink's errors: the first logged, the rest summarised
	clock clockwork.Clock
	host  string
	sinks []*sinkState

	errors  *prometheus.CounterVec
	dropped *prometheus.CounterVec
	pending *prometheus.GaugeVec
}

// sinkState is a sink and the entries it still has to write.
type sinkState struct {
	sink  Sink
	mu    sync.Mutex
	queue []Entry
	lost  int // entries dropped from the queue since the last gap entry
}

// NewTrail returns a trail over sinks (at least one). Its metrics:
// authpipe_admin_audit_errors_total{sink}, _pending_entries{sink} and
// _dropped_total{sink}, created at zero.
func NewTrail(sinks []Sink, deps Deps) (*Trail, error) {
	if len(sinks) == 0 {
		return nil, errors.New("audit trail: no sink")
	}
	inject.Defaults(&deps.Logger, &deps.Registerer, &deps.Clock)
	log := deps.Logger.With("component", "audit")
	f := promauto.With(deps.Registerer)
	t := &Trail{
		log:   log,
		rep:   logrepeat.New(log, deps.Clock, 0),
		clock: deps.Clock,
		host:  deps.Host,
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_admin_audit_errors_total",
			Help: "Audit entries a sink failed to store (sink: log, the JSON-lines file or stdout; redis, the Redis audit stream). Each failed attempt counts, retries of kept entries included.",
		}, []string{"sink"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_admin_audit_dropped_total",
			Help: "Audit entries a failing sink could no longer keep for a later write (more than 10000 waiting): lost from that sink's trail, which records a gap entry in their place.",
		}, []string{"sink"}),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "authpipe_admin_audit_pending_entries",
			Help: "Audit entries a sink failed to store and keeps in memory to write when it works again.",
		}, []string{"sink"}),
	}
	seen := map[string]bool{}
	for _, s := range sinks {
		if seen[s.Name()] {
			return nil, fmt.Errorf("audit trail: two %s sinks", s.Name())
		}
		seen[s.Name()] = true
		t.sinks = append(t.sinks, &sinkState{sink: s})
		t.errors.WithLabelValues(s.Name())
		t.dropped.WithLabelValues(s.Name())
		t.pending.WithLabelValues(s.Name())
	}
	return t, nil
}

// Record writes entries (the parts of one request's entry) to every sink,
// each after what it kept from earlier failures. It returns nil when at
// least one sink stored them all; a sink that did not keeps the rest for
// later. When no sink stored them all it returns an error matching
// ErrUnavailable and keeps none of them: the request must be refused, and
// its refusal recorded with Defer.
func (t *Trail) Record(ctx context.Context, entries ...Entry) error {
	wrote := make([]int, len(t.sinks))
	var errs []error
	ok := false
	for i, s := range t.sinks {
		n, err := t.write(ctx, s, entries, false)
		wrote[i] = n
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok = true
	}
	if !ok {
		return fmt.Errorf("%w: %w", ErrUnavailable, errors.Join(errs...))
	}
	for i, s := range t.sinks {
		if wrote[i] < len(entries) {
			s.mu.Lock()
			t.enqueue(s, entries[wrote[i]:])
			s.mu.Unlock()
		}
	}
	return nil
}

// Defer writes entries that describe what happened already (a change's
// result, a refusal) to every sink that can take them now, and keeps them
// for the others.
func (t *Trail) Defer(ctx context.Context, entries ...Entry) {
	for _, s := range t.sinks {
		_, _ = t.write(ctx, s, entries, true)
	}
}

// Flush writes what the sinks kept, and returns how many entries are
// still waiting.
func (t *Trail) Flush(ctx context.Context) int {
	left := 0
	for _, s := range t.sinks {
		_, _ = t.write(ctx, s, nil, true)
		s.mu.Lock()
		left += len(s.queue)
		s.mu.Unlock()
	}
	return left
}

// Close flushes the trail and logs, as an error, the entries it could not
// write: they are lost when the process ends.
func (t *Trail) Close(ctx context.Context) {
	if left := t.Flush(ctx); left > 0 {
		t.log.Error("audit entries could not be written before exit and are lost", "entries", left)
	}
}

// write writes s's queue, then entries. With keep, what it could not
// write joins the queue. It returns how many of entries it wrote.
func (t *Trail) write(ctx context.Context, s *sinkState, entries []Entry, keep bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error, rest []Entry) (int, error) {
		t.failed(ctx, s, err)
		if keep {
			t.enqueue(s, rest)
		}
		return len(entries) - len(rest), err
	}
	if s.lost > 0 {
		gap := Entry{ID: NewID(), Kind: KindGap, Part: 1, Parts: 1, Time: t.clock.Now().UTC(), Host: t.host,
			Auth: AuthNone, Operation: "audit", Reason: "sink_queue_overflow", Affected: IntPtr(s.lost)}
		if err := s.sink.Append(ctx, gap); err != nil {
			return fail(err, entries)
		}
		s.lost = 0
	}
	for len(s.queue) > 0 {
		if err := s.sink.Append(ctx, s.queue[0]); err != nil {
			return fail(err, entries)
		}
		s.queue = s.queue[1:]
		t.pending.WithLabelValues(s.sink.Name()).Set(float64(len(s.queue)))
	}
	for i, e := range entries {
		if err := s.sink.Append(ctx, e); err != nil {
			return fail(err, entries[i:])
		}
	}
	t.rep.OK(ctx, "write audit entry "+s.sink.Name())
	return len(entries), nil
}

// failed counts a failure; the first of a series is logged (without the
// entry: it names people), the rest summarised once a minute, the
// recovery logged once.
func (t *Trail) failed(ctx context.Context, s *sinkState, err error) {
	t.errors.WithLabelValues(s.sink.Name()).Inc()
	t.rep.Fail(ctx, "write audit entry "+s.sink.Name(), slog.LevelError, "write audit entry", err, "sink", s.sink.Name())
}

// enqueue keeps entries for a later write (s.mu held), dropping the
// oldest beyond MaxPending.
func (t *Trail) enqueue(s *sinkState, entries []Entry) {
	s.queue = append(s.queue, entries...)
	if over := len(s.queue) - MaxPending; over > 0 {
		s.queue = append([]Entry(nil), s.queue[over:]...)
		s.lost += over
		t.dropped.WithLabelValues(s.sink.Name()).Add(float64(over))
		t.log.Error("audit entries dropped: the sink has failed for too long", "sink", s.sink.Name(), "entries", over)
	}
	t.pending.WithLabelValues(s.sink.Name()).Set(float64(len(s.queue)))
}
