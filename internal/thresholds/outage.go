package thresholds

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/lease"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// What the engine does so that a buffer outage (Redis unreachable) never
// reads as an all-clear; see "Outages" in the package doc.

// DefaultResolveHold bounds how long, after a buffer error or a start,
// alerts stay unresolved while no event dated after the error has been
// counted (a quiet tenant).
const DefaultResolveHold = 5 * time.Minute

// freshness says whether the counts are live: complete up to about now.
// After a buffer error, and at start, they are not: events that reached
// Auth0 meanwhile are still to be polled and counted, so a window can only
// look smaller than it is. They are live again once an event dated at or
// after the last error has been counted (the poller appends in log_id
// order, so everything before it is in), or hold after the last error.
type freshness struct {
	clock clockwork.Clock
	log   *slog.Logger
	hold  time.Duration
	m     *engineMetrics

	mu       sync.Mutex
	failedAt time.Time // last buffer error, or the start
	newest   time.Time // newest event date counted (at most the clock's now)
	live     bool
}

// newFreshness starts live or, as after a buffer error, not.
func newFreshness(clock clockwork.Clock, log *slog.Logger, m *engineMetrics, hold time.Duration, live bool) *freshness {
	f := &freshness{clock: clock, log: log, m: m, hold: hold, failedAt: clock.Now(), live: live}
	m.countsLive.Set(boolFloat(live))
	return f
}

// failed records a buffer error: the counts are not live from now on.
func (f *freshness) failed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failedAt = f.clock.Now()
	if f.live {
		f.live = false
		f.m.countsLive.Set(0)
		f.log.Info("threshold counts may be incomplete after a buffer error; alerts are not resolved until counting has caught up")
	}
}

// counted records the newest event date of a counted batch.
func (f *freshness) counted(newest time.Time) {
	now := f.clock.Now()
	if newest.After(now) {
		newest = now // dated ahead of this clock: proves nothing beyond now
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if newest.After(f.newest) {
		f.newest = newest
		f.m.newest.Set(float64(newest.UnixNano()) / 1e9)
	}
	f.update(now)
}

// isLive reports whether the counts are live at now.
func (f *freshness) isLive(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.update(now)
}

// update turns the counts live when they have caught up or the hold has
// passed; f.mu is held.
func (f *freshness) update(now time.Time) bool {
	if f.live {
		return true
	}
	caughtUp := !f.newest.Before(f.failedAt)
	if !caughtUp && now.Sub(f.failedAt) < f.hold {
		return false
	}
	f.live = true
	f.m.countsLive.Set(1)
	if caughtUp {
		f.log.Info("threshold counts are live: an event dated after the last buffer error has been counted")
	} else {
		f.log.Info("threshold counts taken as live: no event dated after the last buffer error within the hold",
			"hold", f.hold.String())
	}
	return true
}

// mirrorStore is the Redis store with a copy, in memory, of the active
// alerts as this replica last saw them, kept by every call that reads or
// changes them. While Redis cannot be reached, the replica that led last
// re-sends the alerts from it, so that Alertmanager does not time them out
// and no breach reads as resolved during the outage.
type mirrorStore struct {
	stateStore

	mu     sync.Mutex
	alerts map[string]store.ActiveAlert // by store.AlertField
}

func newMirrorStore(s stateStore) *mirrorStore {
	return &mirrorStore{stateStore: s, alerts: map[string]store.ActiveAlert{}}
}

func (s *mirrorStore) ActiveAlerts(ctx context.Context) ([]store.ActiveAlert, error) {
	all, err := s.stateStore.ActiveAlerts(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.alerts)
	for _, a := range all {
		s.alerts[store.AlertField(a.Rule, a.Group)] = a
	}
	return all, nil
}

func (s *mirrorStore) ClaimAlert(ctx context.Context, a store.ActiveAlert) (bool, error) {
	ok, err := s.stateStore.ClaimAlert(ctx, a)
	if ok {
		s.mu.Lock()
		s.alerts[store.AlertField(a.Rule, a.Group)] = a
		s.mu.Unlock()
	}
	return ok, err
}

func (s *mirrorStore) PutAlert(ctx context.Context, a store.ActiveAlert) error {
	if err := s.stateStore.PutAlert(ctx, a); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.alerts[store.AlertField(a.Rule, a.Group)]; ok && old.StartsAt.Equal(a.StartsAt) {
		s.alerts[store.AlertField(a.Rule, a.Group)] = a
	}
	return nil
}

func (s *mirrorStore) DropAlert(ctx context.Context, rule, group string, startsAt time.Time) (bool, error) {
	dropped, err := s.stateStore.DropAlert(ctx, rule, group, startsAt)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.alerts[store.AlertField(rule, group)]; ok && old.StartsAt.Equal(startsAt) {
		delete(s.alerts, store.AlertField(rule, group))
	}
	return dropped, nil
}

// due returns the mirrored alerts not sent for minAge, as firing until
// now+firingFor, and marks them sent at now.
func (s *mirrorStore) due(now time.Time, minAge, firingFor time.Duration) []notify.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []notify.Alert
	for _, k := range slices.Sorted(maps.Keys(s.alerts)) {
		a := s.alerts[k]
		if now.Sub(a.LastSent) < minAge {
			continue
		}
		a.LastSent = now
		s.alerts[k] = a
		out = append(out, notify.Alert{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: now.Add(firingFor)})
	}
	return out
}

// forget drops the copy: another replica is in charge of the alerts.
func (s *mirrorStore) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.alerts)
}

// keepAlerts re-sends the active alerts every ResendInterval, on every
// replica, until ctx ends: the leader from Redis; while Redis cannot be
// reached, the replica that led last from its copy (mirrorStore). A
// replica that finds Redis answering and another replica's lease in place
// steps down: it forgets its copy and zeroes its breach gauges. On the
// embedded buffer (one process, state in memory) it re-sends from memory.
func (e *Engine) keepAlerts(ctx context.Context) {
	e.every(ctx, max(e.cfg.ResendInterval/4, time.Millisecond), func() { e.resendTick(ctx) })
}

func (e *Engine) resendTick(ctx context.Context) {
	now := e.clock.Now()
	if e.Leader() {
		err := e.ev.resendActive(ctx, now)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			e.rep.OK(ctx, "re-send active alerts")
			e.fromMemory.Store(false)
			return
		}
		e.bufferFailed()
		e.rep.Fail(ctx, "re-send active alerts", slog.LevelWarn, "re-send active alerts", err)
	} else if e.mirror != nil {
		moved, err := e.leadershipMoved(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			e.fromMemory.Store(false)
			if moved {
				e.stepDown()
			}
			return // Redis answers: its lease holder re-sends (this replica, once its keeper has the lease back)
		}
		e.bufferFailed()
	}
	if e.mirror == nil || !e.ledLast.Load() {
		return
	}
	// Redis does not answer and this replica led last: keep the alerts
	// alive at Alertmanager from the copy.
	if send := e.mirror.due(now, e.ev.resend-e.ev.resend/10, e.ev.firingFor()); len(send) > 0 {
		if !e.fromMemory.Swap(true) {
			e.log.Info("re-sending active alerts from memory while the buffer does not answer", "alerts", len(send))
		}
		e.ev.out.Notify(send)
	}
}

// leadershipMoved reports whether another replica has acquired the
// threshold lease since this one last held it: the lease's fencing counter
// grew past this replica's last token.
func (e *Engine) leadershipMoved(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n, err := e.cfg.Redis.Get(rctx, lease.FenceKey(e.leaseName)).Int64()
	if errors.Is(err, redis.Nil) {
		n, err = 0, nil // no acquisition yet (or Redis lost its data: nothing to step down to)
	}
	if err != nil {
		return false, err
	}
	return n > e.lastToken.Load(), nil
}

// stepDown hands the alerts and the breach gauges over to the replica that
// now holds the lease: this one no longer reports them.
func (e *Engine) stepDown() {
	if !e.ledLast.Swap(false) {
		return
	}
	e.mirror.forget()
	for _, r := range e.ev.rules.Load().Rules {
		e.m.breached.WithLabelValues(r.Name).Set(0)
		e.m.value.WithLabelValues(r.Name).Set(0)
	}
	e.log.Info("another replica holds the threshold lease now; it reports the breaches and re-sends the alerts")
}

// bufferFailed records a buffer error (see freshness).
func (e *Engine) bufferFailed() { e.fresh.failed() }
