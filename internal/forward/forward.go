package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/logrepeat"
	"github.com/authpipe/authpipe/internal/metrics"
)

// Buffer is what the forwarder needs of the buffer (*buffer.Redis).
type Buffer interface {
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	ReadPending(ctx context.Context, group, consumer, after string, count int) ([]buffer.Entry, error)
	Ack(ctx context.Context, group string, ids ...string) error
	Touch(ctx context.Context, group, consumer string, ids ...string) error
	Reclaim(ctx context.Context, group, consumer string, minIdle time.Duration, count int) ([]buffer.Entry, error)
	NoteFailure(ctx context.Context, id, reason string) error
	DeadLetter(ctx context.Context, group string, e buffer.Entry, reason string) error
}

var _ Buffer = (*buffer.Redis)(nil)

const (
	// clientRetryAfter is analytics-go's wait between attempts: tiny,
	// because the transport owns retry timing.
	clientRetryAfter = 5 * time.Millisecond
	// ackBatch and ackEvery bound how acknowledgements are grouped.
	ackBatch = 500
	ackEvery = 100 * time.Millisecond
	// redisTimeout bounds every Redis call made on behalf of messages.
	redisTimeout = 5 * time.Second
	// readBlock is the longest a read waits for new entries.
	readBlock = time.Second
	// readErrorWait is the pause after a failed read.
	readErrorWait = time.Second
	// reclaimCount is the most entries one Reclaim call takes over.
	reclaimCount = 100
	// touchChunk is the most ids per Touch or Ack call.
	touchChunk = 500
)

// phase of the forwarder's lifecycle.
type phase int

const (
	running  phase = iota // reading and sending
	draining              // reading stopped; messages in flight resolve; no retries
	closed                // no more Enqueue; clients closing
)

// Forwarder reads one tenant's buffer and sends each event to Segment.
type Forwarder struct {
	cfg   Config
	buf   Buffer
	log   *slog.Logger
	rep   *logrepeat.Summarizer // the read loop's repeated errors
	clock clockwork.Clock
	stage metrics.Stage
	m     forwardMetrics
	tr    *transport
	mp    mapper

	ran atomic.Bool

	results  chan result
	mainQ    *queue
	isoQ     *queue
	isoSlots chan struct{}

	enqMu     sync.RWMutex // held for reading around Enqueue, for writing to stop it
	enqClosed bool
	main, iso analytics.Client

	mu       sync.Mutex
	phase    phase
	items    map[string]*item // by messageId
	byEntry  map[string]*item // by stream entry id
	active   int              // items queued for or inside a client
	reserved int              // entries read and not yet admitted (readLoop)
	space    chan struct{}    // cap 1: entries were released
	idle     chan struct{}    // cap 1: active decreased
}

// item is one message in flight and the buffer entries it stands for
// (normally one; more if the same log_id was buffered twice).
type item struct {
	id       string // messageId
	entries  []buffer.Entry
	track    analytics.Track
	isolated bool // sent alone through the isolation client
	attempts int  // transient failures so far
	touched  time.Time
	active   bool // queued for or inside a client
	retry    clockwork.Timer
}

// result is what a callback reports for one message.
type result struct {
	id  string
	iso bool
	err error // nil: Success
}
type forwardMetrics struct {
	acked, retries, trimmed prometheus.Counter
	inFlight                prometheus.Gauge
	filtered                map[string]prometheus.Counter // by filter reason
}

// New builds a forwarder. Nothing runs until Run.
func New(cfg Config, buf Buffer, deps Deps) (*Forwarder, error) {
	if buf == nil {
		return nil, errors.New("forward: buffer is required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	deps = deps.withDefaults()
	log := deps.Logger.With("component", "forward", "tenant", cfg.Tenant)

	m, err := registerMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	requests := deps.Requests
	if requests == nil {
		if requests, err = NewRequests(deps.Registerer); err != nil {
			return nil, err
		}
	}
	f := &Forwarder{
		cfg:      cfg,
		buf:      buf,
		log:      log,
		rep:      logrepeat.New(log, deps.Clock, 0),
		clock:    deps.Clock,
		stage:    deps.Stages.For(metrics.StageForward),
		m:        m,
		tr:       newTransport(deps.Clock, log, cfg.MinBackoff, cfg.MaxBackoff, requests.vec),
		mp:       newMapper(cfg.Tenant, []byte(cfg.HashKey.Reveal()), cfg.PII),
		results:  make(chan result, cfg.MaxInFlight+2*cfg.IsolationInFlight+64),
		mainQ:    newQueue(),
		isoQ:     newQueue(),
		isoSlots: make(chan struct{}, cfg.IsolationInFlight),
		items:    map[string]*item{},
		byEntry:  map[string]*item{},
		space:    make(chan struct{}, 1),
		idle:     make(chan struct{}, 1),
	}
	return f, nil
}

// registerMetrics registers the forwarder's metrics on reg, the tenant's
// registerer, and creates every series at zero.
func registerMetrics(reg prometheus.Registerer) (forwardMetrics, error) {
	r := metrics.NewRegistrar(reg)
	m := forwardMetrics{
		acked: r.Counter("authpipe_forward_events_acked_total",
			"Buffer entries acknowledged after Segment accepted their message."),
		retries: r.Counter("authpipe_forward_retries_total",
			"Messages re-sent after a transient Segment failure."),
		trimmed: r.Counter("authpipe_forward_details_trimmed_total",
			"Messages sent without properties.details because they exceeded 32000 bytes."),
		inFlight: r.Gauge("authpipe_forward_in_flight_events",
			"Buffer entries read by the forwarder and not yet acknowledged, dead-lettered or left pending."),
		filtered: map[string]prometheus.Counter{},
	}
	filtered := r.CounterVec("authpipe_forward_events_filtered_total",
		"Buffer entries acknowledged without sending because the log type filter left them out.", "reason")
	if err := r.Err(); err != nil {
		return forwardMetrics{}, fmt.Errorf("register forward metrics (one forwarder per registerer: give each tenant's its own): %w", err)
	}
	for _, r := range filterReasons {
		m.filtered[r] = filtered.WithLabelValues(r)
	}
	return m, nil
}

// Requests is authpipe_forward_segment_requests_total{code}, the Segment
// requests of every forwarder of the process: the Segment endpoint is the
// application's, so the family carries no tenant label.
type Requests struct{ vec *prometheus.CounterVec }

// NewRequests registers the Segment request counters on reg (the
// application's registerer, not a tenant's) with every series at zero.
func NewRequests(reg prometheus.Registerer) (*Requests, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "authpipe_forward_segment_requests_total",
		Help: "Segment batch requests by outcome (status class, or error for network errors).",
	}, []string{"code"})
	if err := reg.Register(vec); err != nil {
		return nil, fmt.Errorf("register forward metrics: %w", err)
	}
	for _, c := range codeLabels {
		vec.WithLabelValues(c)
	}
	return &Requests{vec: vec}, nil
}

// Run forwards until ctx is cancelled, then shuts down in order: stop
// reading; let messages in flight resolve for up to DrainTimeout; stop
// Enqueue; close the Segment clients (aborting their retries); acknowledge
// what Segment accepted. Entries not acknowledged stay pending and are
// redelivered after restart. Run returns nil after such a shutdown, and an
// error only if it could not start.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.ran.CompareAndSwap(false, true) {
		return errors.New("forward: Run called twice")
	}
	if err := f.buf.EnsureGroup(ctx, f.cfg.Group); err != nil {
		return fmt.Errorf("ensure consumer group %q: %w", f.cfg.Group, err)
	}
	cl := clientLogger{log: f.log}
	var err error
	f.main, err = analytics.NewWithConfig(f.cfg.WriteKey.Reveal(), analytics.Config{
		Endpoint:   f.cfg.Endpoint,
		Interval:   f.cfg.FlushInterval,
		BatchSize:  f.cfg.BatchSize,
		Transport:  f.tr,
		Logger:     cl,
		Callback:   callback{f: f},
		RetryAfter: func(int) time.Duration { return clientRetryAfter },
	})
	if err != nil {
		return fmt.Errorf("create segment client: %w", err)
	}
	f.iso, err = analytics.NewWithConfig(f.cfg.WriteKey.Reveal(), analytics.Config{
		Endpoint:   f.cfg.Endpoint,
		Interval:   f.cfg.FlushInterval,
		BatchSize:  1,
		Transport:  f.tr,
		Logger:     cl,
		Callback:   callback{f: f, iso: true},
		RetryAfter: func(int) time.Duration { return clientRetryAfter },
	})
	if err != nil {
		_ = f.main.Close()
		return fmt.Errorf("create segment isolation client: %w", err)
	}

	// Redis work on behalf of messages (ack, dead-letter, touch) goes on
	// during shutdown, each call bounded by redisTimeout.
	bg, cancelBg := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBg()

	resolved := make(chan struct{})
	go func() {
		defer close(resolved)
		f.resolveLoop(bg)
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); f.sendLoop(f.mainQ, false, stop) }()
	go func() { defer wg.Done(); f.sendLoop(f.isoQ, true, stop) }()
	go func() { defer wg.Done(); f.heartbeatLoop(bg, stop) }()

	f.log.Info("forwarder started", "group", f.cfg.Group, "consumer", f.cfg.Consumer,
		"include_types", f.cfg.Filter.Include, "exclude_types", f.cfg.Filter.Exclude,
		"pii_user_name", f.cfg.PII.UserName, "pii_email", f.cfg.PII.Email,
		"pii_ip", f.cfg.PII.IP, "pii_user_agent", f.cfg.PII.UserAgent)
	f.readLoop(ctx, bg)

	// Shutdown.
	f.drain()
	f.enqMu.Lock()
	f.enqClosed = true
	f.enqMu.Unlock()
	f.setPhase(closed)
	close(stop)
	f.tr.shutdown()
	if err := f.main.Close(); err != nil {
		f.log.Warn("close segment client", "err", err)
	}
	if err := f.iso.Close(); err != nil {
		f.log.Warn("close segment isolation client", "err", err)
	}
	close(f.results) // both clients closed: no callback can follow
	<-resolved
	wg.Wait()
	f.tr.closeIdle()

	f.mu.Lock()
	pending := len(f.byEntry)
	f.m.inFlight.Set(0)
	f.mu.Unlock()
	if pending > 0 {
		f.log.Warn("forwarder stopped with entries not acknowledged: they stay pending and will be redelivered after restart; Segment drops the duplicates by messageId",
			"pending", pending)
	} else {
		f.log.Info("forwarder stopped: everything read was resolved")
	}
	return nil
}
