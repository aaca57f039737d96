package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/auth0log"
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

	m, requests, err := registerMetrics(deps.Registerer, cfg.Tenant)
	if err != nil {
		return nil, err
	}
	f := &Forwarder{
		cfg:      cfg,
		buf:      buf,
		log:      log,
		rep:      logrepeat.New(log, deps.Clock, 0),
		clock:    deps.Clock,
		stage:    deps.Stages.For(metrics.StageForward, cfg.Tenant),
		m:        m,
		tr:       newTransport(deps.Clock, log, cfg.MinBackoff, cfg.MaxBackoff, requests),
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

// registerMetrics registers the forwarder's families, reusing families that
// another tenant's forwarder registered on the same registry, and creates
// this tenant's series at zero.
func registerMetrics(reg prometheus.Registerer, tenant string) (forwardMetrics, *prometheus.CounterVec, error) {
	var errs []error
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		v, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
		errs = append(errs, err)
		return v
	}
	acked := counter("authpipe_forward_events_acked_total",
		"Buffer entries acknowledged after Segment accepted their message.", "tenant")
	retries := counter("authpipe_forward_retries_total",
		"Messages re-sent after a transient Segment failure.", "tenant")
	trimmed := counter("authpipe_forward_details_trimmed_total",
		"Messages sent without properties.details because they exceeded 32000 bytes.", "tenant")
	requests := counter("authpipe_forward_segment_requests_total",
		"Segment batch requests by outcome (status class, or error for network errors).", "code")
	filtered := counter("authpipe_forward_events_filtered_total",
		"Buffer entries acknowledged without sending because the log type filter left them out.", "tenant", "reason")
	inFlight, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "authpipe_forward_in_flight_events",
		Help: "Buffer entries read by the forwarder and not yet acknowledged, dead-lettered or left pending.",
	}, []string{"tenant"}))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return forwardMetrics{}, nil, fmt.Errorf("register forward metrics: %w", err)
	}
	for _, c := range codeLabels {
		requests.WithLabelValues(c)
	}
	byReason := map[string]prometheus.Counter{}
	for _, r := range filterReasons {
		byReason[r] = filtered.WithLabelValues(tenant, r)
	}
	return forwardMetrics{
		acked:    acked.WithLabelValues(tenant),
		retries:  retries.WithLabelValues(tenant),
		trimmed:  trimmed.WithLabelValues(tenant),
		inFlight: inFlight.WithLabelValues(tenant),
		filtered: byReason,
	}, requests, nil
}

// register registers c, or returns the identical collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
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

func (f *Forwarder) freeSlots() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg.MaxInFlight - len(f.byEntry) - f.reserved
}

// reserve counts n entries read and not yet admitted against MaxInFlight.
func (f *Forwarder) reserve(n int) {
	f.mu.Lock()
	f.reserved += n
	f.mu.Unlock()
}

// unreserve releases what reserve counted, once admit has taken the
// entries in (or resolved them), and wakes a waitSpace.
func (f *Forwarder) unreserve(n int) {
	f.mu.Lock()
	f.reserved -= n
	f.mu.Unlock()
	select {
	case f.space <- struct{}{}:
	default:
	}
}

// waitSpace blocks until fewer than MaxInFlight entries are held and returns
// the free room, or 0 when ctx is done.
func (f *Forwarder) waitSpace(ctx context.Context) int {
	for {
		if free := f.freeSlots(); free > 0 {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-f.space:
		}
	}
}

func (f *Forwarder) sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-f.clock.After(d):
	}
}

// admit maps each entry and hands it to the Segment client, dead-letters it
// when it can never become a valid message, or acknowledges it unsent when
// the filter leaves its type out.
func (f *Forwarder) admit(bg context.Context, entries []buffer.Entry, now time.Time) {
	var filtered map[string][]string // by reason: entry ids
	defer func() { f.ackFiltered(bg, filtered) }()
	for _, e := range entries {
		f.stage.Received.Inc()
		f.mu.Lock()
		_, held := f.byEntry[e.ID]
		f.mu.Unlock()
		if held {
			continue
		}
		if len(e.Raw) == 0 {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, (&InvalidError{Reason: "entry has no data (deleted from the stream while pending)"}).Error())
			continue
		}
		l, err := auth0log.DecodeShared(e.Raw) // e.Raw is the entry's own copy, read only
		if err != nil {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, (&InvalidError{Reason: err.Error()}).Error())
			continue
		}
		if reason, drop := f.cfg.Filter.Drop(l.Type); drop {
			if filtered == nil {
				filtered = map[string][]string{}
			}
			filtered[reason] = append(filtered[reason], e.ID)
			continue
		}
		track, trimmed, err := f.mp.mapLog(l)
		if err != nil {
			f.stage.Failed.Inc()
			f.deadLetter(bg, []buffer.Entry{e}, err.Error())
			continue
		}
		if trimmed {
			f.m.trimmed.Inc()
		}

		f.mu.Lock()
		if it := f.items[track.MessageId]; it != nil {
			// The same log_id buffered twice: one message, acked together.
			it.entries = append(it.entries, e)
			f.byEntry[e.ID] = it
			f.m.inFlight.Set(float64(len(f.byEntry)))
			f.mu.Unlock()
			continue
		}
		it := &item{id: track.MessageId, entries: []buffer.Entry{e}, track: track, touched: now, active: true}
		f.items[it.id] = it
		f.byEntry[e.ID] = it
		f.active++
		f.m.inFlight.Set(float64(len(f.byEntry)))
		f.mu.Unlock()
		f.enqueue(it)
	}
}

// enqueue hands an active item to its client. It reports false when Enqueue
// is stopped (the item is parked: it stays pending).
func (f *Forwarder) enqueue(it *item) bool {
	f.enqMu.RLock()
	defer f.enqMu.RUnlock()
	if f.enqClosed {
		f.park(it)
		return false
	}
	c := f.main
	if it.isolated {
		c = f.iso
	}
	if err := c.Enqueue(it.track); err != nil {
		// Resolved like a failed send; results has room for every item.
		f.results <- result{id: it.id, iso: it.isolated, err: err}
		return true
	}
	f.stage.Written.Inc()
	return true
}

// sendLoop hands queued items (retries, isolated re-sends) to a client. The
// isolation loop keeps at most IsolationInFlight messages in its client.
func (f *Forwarder) sendLoop(q *queue, iso bool, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			f.parkAll(q.popAll())
			return
		case <-q.notify:
		}
		items := q.popAll()
		for i, it := range items {
			if iso {
				select {
				case f.isoSlots <- struct{}{}:
				case <-stop:
					f.parkAll(items[i:])
					f.parkAll(q.popAll())
					return
				}
			}
			if !f.enqueue(it) && iso {
				<-f.isoSlots
			}
		}
	}
}

// park marks an item inactive without resolving it: its entries stay
// pending in the buffer (and held, so they are counted at shutdown).
func (f *Forwarder) park(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deactivate(it)
}

func (f *Forwarder) parkAll(items []*item) {
	for _, it := range items {
		f.park(it)
	}
}

// deactivate requires mu.
func (f *Forwarder) deactivate(it *item) {
	if !it.active {
		return
	}
	it.active = false
	f.active--
	select {
	case f.idle <- struct{}{}:
	default:
	}
}

// forget drops an item and its entries from memory (after ack or dead
// letter, or after a Redis failure that leaves them pending for reclaim).
func (f *Forwarder) forget(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deactivate(it)
	if f.items[it.id] == it {
		delete(f.items, it.id)
	}
	for _, e := range it.entries {
		if f.byEntry[e.ID] == it {
			delete(f.byEntry, e.ID)
		}
	}
	f.m.inFlight.Set(float64(len(f.byEntry)))
	select {
	case f.space <- struct{}{}:
	default:
	}
}

// callback receives analytics-go's per-message outcome on its sender
// goroutines and only hands it on.
type callback struct {
	f   *Forwarder
	iso bool
}

func (c callback) Success(m analytics.Message) {
	c.f.results <- result{id: messageIDOf(m), iso: c.iso}
}

func (c callback) Failure(m analytics.Message, err error) {
	if err == nil {
		err = errors.New("segment client reported failure without error")
	}
	c.f.results <- result{id: messageIDOf(m), iso: c.iso, err: err}
}

func messageIDOf(m analytics.Message) string {
	switch t := m.(type) {
	case analytics.Track:
		return t.MessageId
	case *analytics.Track:
		if t != nil {
			return t.MessageId
		}
	}
	return ""
}

// resolveLoop applies callback results and acknowledges accepted messages in
// batches, until results is closed; then it flushes the last acks.
func (f *Forwarder) resolveLoop(bg context.Context) {
	tick := f.clock.NewTicker(ackEvery)
	defer tick.Stop()
	var acks []*item
	for {
		select {
		case r, ok := <-f.results:
			if !ok {
				f.ack(bg, acks)
				return
			}
			if r.iso {
				select { // the slot its isolation sender took
				case <-f.isoSlots:
				default:
				}
			}
			if it := f.resolve(bg, r); it != nil {
				acks = append(acks, it)
				if len(acks) >= ackBatch {
					f.ack(bg, acks)
					acks = nil
				}
			}
		case <-tick.Chan():
			if len(acks) > 0 {
				f.ack(bg, acks)
				acks = nil
			}
		}
	}
}

// resolve applies one result. It returns the item when it is to be acked.
func (f *Forwarder) resolve(bg context.Context, r result) *item {
	f.mu.Lock()
	it := f.items[r.id]
	if it == nil || !it.active {
		f.mu.Unlock()
		return nil
	}
	f.deactivate(it)
	ph := f.phase
	f.mu.Unlock()

	if r.err == nil {
		f.stage.Acked.Inc()
		return it
	}
	f.stage.Failed.Inc()

	var se *StatusError
	switch {
	case errors.Is(r.err, analytics.ErrMessageTooBig):
		f.deadLetter(bg, it.entries, fmt.Sprintf("oversize: analytics-go rejected the message as over %d bytes", MaxMessageBytes))
		f.forget(it)
	case errors.As(r.err, &se) && se.Permanent:
		switch {
		case it.isolated:
			f.deadLetter(bg, it.entries, buffer.ReasonSegmentRejected+": "+se.Status)
			f.forget(it)
		case ph == closed:
			// Stays pending; isolated after restart.
		default:
			// A batch-mate may be the bad one: re-send this message alone.
			f.mu.Lock()
			it.isolated = true
			it.active = true
			f.active++
			f.mu.Unlock()
			f.isoQ.push(it)
		}
	default:
		reason := transientReason(r.err)
		for _, e := range it.entries {
			ctx, cancel := context.WithTimeout(bg, redisTimeout)
			if err := f.buf.NoteFailure(ctx, e.ID, reason); err != nil {
				f.log.Warn("note failure reason", "entry", e.ID, "err", err)
			}
			cancel()
		}
		if ph != running {
			return nil // parked: stays pending
		}
		f.scheduleRetry(it)
	}
	return nil
}

// scheduleRetry re-sends an item after a backoff that grows with its
// transient failures and respects Segment's rate-limit pause.
func (f *Forwarder) scheduleRetry(it *item) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.phase != running {
		return
	}
	it.attempts++
	d := jitter(backoff(f.cfg.MinBackoff, f.cfg.MaxBackoff, it.attempts))
	if pause := f.tr.pausedUntil().Sub(f.clock.Now()); pause > d {
		d = pause
	}
	f.m.retries.Inc()
	it.retry = f.clock.AfterFunc(d, func() { f.retryNow(it) })
}

func (f *Forwarder) retryNow(it *item) {
	f.mu.Lock()
	if f.phase != running || f.items[it.id] != it || it.active {
		f.mu.Unlock()
		return
	}
	it.retry = nil
	it.active = true
	f.active++
	iso := it.isolated
	f.mu.Unlock()
	if iso {
		f.isoQ.push(it)
	} else {
		f.mainQ.push(it)
	}
}

// transientReason is the failure reason noted on an entry (and used by the
// buffer if the entry is dead-lettered after too many deliveries).
func transientReason(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return "segment_transient: " + se.Status
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return "segment_transient: " + ue.Err.Error()
	}
	return "segment_transient: " + err.Error()
}

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
	for chunk := range chunks(ids, touchChunk) {
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
		for chunk := range chunks(byReason[reason], touchChunk) {
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
	for chunk := range chunks(ids, touchChunk) {
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

// drain waits, up to DrainTimeout, for the messages in the clients to
// resolve. Retries are no longer scheduled.
func (f *Forwarder) drain() {
	f.mu.Lock()
	f.phase = draining
	for _, it := range f.items {
		if it.retry != nil {
			it.retry.Stop()
			it.retry = nil
		}
	}
	f.mu.Unlock()
	timeout := f.clock.After(f.cfg.DrainTimeout)
	for {
		f.mu.Lock()
		n := f.active
		f.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-f.idle:
		case <-timeout:
			f.log.Warn("drain timeout: closing the Segment clients with messages in flight", "messages", n)
			return
		}
	}
}

func (f *Forwarder) setPhase(p phase) {
	f.mu.Lock()
	f.phase = p
	f.mu.Unlock()
}

// queue is an unbounded FIFO of items with a wake-up signal.
type queue struct {
	mu     sync.Mutex
	items  []*item
	notify chan struct{}
}

func newQueue() *queue { return &queue{notify: make(chan struct{}, 1)} }

func (q *queue) push(it *item) {
	q.mu.Lock()
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *queue) popAll() []*item {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

func entryIDs(entries []buffer.Entry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	return ids
}

// chunks yields ids in slices of at most n.
func chunks(ids []string, n int) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(ids) > 0 {
			k := min(n, len(ids))
			if !yield(ids[:k]) {
				return
			}
			ids = ids[k:]
		}
	}
}
