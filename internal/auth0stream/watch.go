package auth0stream

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
)

// DefaultGrace is how long after its date a log may still arrive by the
// stream before the poller's finding it first counts as a miss.
const DefaultGrace = 2 * time.Minute

// Watch measures one tenant's Log Stream against the poller, the proof of
// completeness: it is the poller's view of the stream (auth0poll.Stream)
// and counts, in authpipe_stream_missed_events_total{tenant}, the logs the
// poller stored that the stream did not deliver in time.
//
// A log counts as missed when the poller found it before the stream (the
// buffer did not hold it when the poller was about to append it), it is
// dated at or after the stream's first commit in this process — logs from
// before (the retention backfill, logs of a downtime that Auth0 retries
// later) are not the stream's to deliver yet — and the stream did not
// deliver it within Grace of its date either. A log the poller finds
// younger than Grace is held until the stream delivers it (not missed) or
// Grace has passed (missed), counted at the latest when the counter is
// next read (a log found out of date order, when the log found before it
// is). Logs the poller finds again (a page re-fetched after a crash,
// a lost buffer polled again) are already in the buffer or left out by
// the poller, so they are never counted twice.
//
// Limits, both undercounts: logs held in the Grace window when the
// process stops are not counted, and with several replicas each Watch
// sees only its own receiver's deliveries (the buffer's dedupe record
// still shows every replica's). Memory: the log_ids the stream delivered
// or the poller found first within the last Grace.
type Watch struct {
	tenant string
	grace  time.Duration
	clock  clockwork.Clock

	mu        sync.Mutex
	since     time.Time            // the stream's first commit; zero before
	last      time.Time            // the stream's last commit; zero before
	delivered map[string]time.Time // log_ids the stream delivered, by when
	order     []delivery           // delivered, in commit order: forgotten from the front
	held      map[string]time.Time // log_ids the poller found first, young: counted as missed at this time
	heldOrder []delivery           // held, in the order found (dates nearly ascending): counted from the front
	missed    float64
}

// WatchConfig configures a Watch. Zero fields get defaults.
type WatchConfig struct {
	// Grace (DefaultGrace): a log the stream delivers within this long
	// of its date is not missed, even when the poller found it first.
	Grace time.Duration
}

// NewWatch returns the watch of tenant's stream, its missed counter
// registered on reg, the tenant's registerer (the caller adds the tenant
// label, metrics.Tenant). Feed it every commit of
// the receiver (Committed, from Deps.OnCommit) and hand it to the tenant's
// poller; it is built before the receiver, which needs the tenant's buffer
// that the poller comes with.
func NewWatch(tenant string, cfg WatchConfig, reg prometheus.Registerer, clock clockwork.Clock) (*Watch, error) {
	if err := config.CheckTenant(tenant); err != nil {
		return nil, fmt.Errorf("stream watch: tenant %q: %w", tenant, err)
	}
	if cfg.Grace < 0 {
		return nil, fmt.Errorf("stream watch: grace %s: want more than 0 (0 for the default %s)", cfg.Grace, DefaultGrace)
	}
	cfg.Grace = cmp.Or(cfg.Grace, DefaultGrace)
	inject.Defaults(nil, &reg, &clock)
	w := &Watch{
		tenant:    tenant,
		grace:     cfg.Grace,
		clock:     clock,
		delivered: map[string]time.Time{},
		held:      map[string]time.Time{},
	}
	missed := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "authpipe_stream_missed_events_total",
		Help: "Log events the poller stored that the tenant's Log Stream did not deliver within the grace after their date " +
			"(dated after the stream's first delivery since start): the stream's own loss, measured by the poller.",
	}, w.Missed)
	if err := reg.Register(missed); err != nil {
		return nil, fmt.Errorf("register stream missed counter: %w", err)
	}
	return w, nil
}

// LastEvent returns when the stream last delivered events — the receiver's
// LastEvent for the tenant, as the commits fed tell it; false before the
// first.
func (w *Watch) LastEvent() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last, !w.last.IsZero()
}

// Committed records a commit of the watch's tenant (other tenants' are
// ignored): its logs were delivered by the stream.
func (w *Watch) Committed(c Commit) {
	if c.Tenant != w.tenant || len(c.Logs) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.since.IsZero() {
		w.since = c.At
	}
	if c.At.After(w.last) {
		w.last = c.At
	}
	for _, l := range c.Logs {
		w.delivered[l.ID] = c.At
		w.order = append(w.order, delivery{l.ID, c.At})
		delete(w.held, l.ID)
	}
	w.expire(c.At)
}

// PolledFirst implements auth0poll.Stream: logs the poller is storing
// that the buffer did not hold.
func (w *Watch) PolledFirst(logs []auth0log.Log, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire(at)
	if w.since.IsZero() {
		return
	}
	for _, l := range logs {
		if l.Date.Before(w.since) {
			continue
		}
		if _, ok := w.delivered[l.ID]; ok {
			continue // the stream stored it between the poller's read and its append
		}
		due := l.Date.Add(w.grace)
		if !at.Before(due) {
			w.missed++
			continue
		}
		w.held[l.ID] = due
		w.heldOrder = append(w.heldOrder, delivery{l.ID, due})
	}
}

// Missed returns the logs counted as missed so far, after counting those
// held whose grace has passed.
func (w *Watch) Missed() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expire(w.clock.Now())
	return w.missed
}

// expire counts the held logs whose grace ended by now and forgets the
// deliveries older than the grace. Held logs are counted from the front of
// their queue, not by a walk of the map: while the stream is down every
// page the poller stores is held, and a walk per page would cost the
// grace's worth of logs each time. A log found out of date order is
// counted when the one before it is, a moment late (the poller's pages are
// in log_id order, which follows the date).
func (w *Watch) expire(now time.Time) {
	h := 0
	for h < len(w.heldOrder) && !now.Before(w.heldOrder[h].at) {
		if d := w.heldOrder[h]; w.held[d.id].Equal(d.at) {
			w.missed++
			delete(w.held, d.id)
		}
		h++
	}
	w.heldOrder = w.heldOrder[h:]
	n := 0
	for n < len(w.order) && now.Sub(w.order[n].at) > w.grace {
		if d := w.order[n]; w.delivered[d.id].Equal(d.at) {
			delete(w.delivered, d.id)
		}
		n++
	}
	// The front's array is freed when append next outgrows it.
	w.order = w.order[n:]
}

// delivery is a log_id and a time: when the stream delivered it (order),
// or when its grace ends (heldOrder).
type delivery struct {
	id string
	at time.Time
}
