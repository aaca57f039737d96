// Package logrepeat keeps a retry loop's log readable while a fault lasts:
// the first failure of an action is logged in full, the repeats are counted
// and summarised at most once per interval, and the first success after
// them logs one "recovered" line.
//
// Guarantee: every failure is either logged or counted in the next line
// about the same action (a summary or the recovered line), so no failure is
// silent and none is logged twice; a recovery is logged exactly once per
// episode, and only after a failure was. Time comes from an injected clock:
// summaries are emitted by the failing loop itself (on a Fail call once the
// interval has passed), never by a goroutine of this package.
//
// The lines for an action whose message is msg:
//
//	level  msg                   attrs…, err                 first failure
//	level  msg: still failing    attrs…, err, failures, failing_for   at most once per interval
//	INFO   msg: recovered        failures, failing_for       first success after failures
//
// failures counts the failures since the previous line (summary), or in the
// whole episode (recovered); failing_for is the time since the first one.
package logrepeat

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/authpipe/authpipe/internal/inject"
)

// DefaultInterval is the summary interval when New is given none.
const DefaultInterval = time.Minute

// Summarizer summarises the repeated failures of a component's actions.
// The zero value is not usable; build it with New. Safe for concurrent use.
type Summarizer struct {
	log      *slog.Logger
	clock    clockwork.Clock
	interval time.Duration

	failing atomic.Int32 // len(episodes), read without the lock on success paths
	mu      sync.Mutex
	eps     map[string]*episode
}

// episode is one action's run of failures.
type episode struct {
	msg      string
	since    time.Time // first failure
	lastLine time.Time // last line logged (first failure or summary)
	total    int       // failures in the episode
	unlogged int       // failures since the last line
}

// Episode describes a run of failures that ended (Clear).
type Episode struct {
	Failures int           // failures in the episode
	Duration time.Duration // from the first failure to the recovery
}

// New returns a Summarizer logging to log, with time from clock (the real
// clock if nil), summarising at most once per interval (DefaultInterval if
// not positive).
func New(log *slog.Logger, clock clockwork.Clock, interval time.Duration) *Summarizer {
	inject.Defaults(&log, nil, &clock)
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Summarizer{log: log, clock: clock, interval: interval, eps: map[string]*episode{}}
}

// Fail reports a failed attempt at the action key. The first failure of an
// episode is logged as msg at level with attrs and err; later ones are
// counted, and once interval has passed since the last line, one summary
// line carries their count and the latest err and attrs. key tells actions
// apart (usually msg itself; msg plus a rule name for per-rule actions).
func (s *Summarizer) Fail(ctx context.Context, key string, level slog.Level, msg string, err error, attrs ...any) {
	now := s.clock.Now()
	s.mu.Lock()
	ep, ok := s.eps[key]
	if !ok {
		s.eps[key] = &episode{msg: msg, since: now, lastLine: now, total: 1}
		s.failing.Store(int32(len(s.eps)))
		s.mu.Unlock()
		s.log.Log(ctx, level, msg, slices.Concat(attrs, []any{"err", err})...)
		return
	}
	ep.total++
	ep.unlogged++
	if now.Sub(ep.lastLine) < s.interval {
		s.mu.Unlock()
		return
	}
	n, since := ep.unlogged, ep.since
	ep.unlogged, ep.lastLine, ep.msg = 0, now, msg
	s.mu.Unlock()
	s.log.Log(ctx, level, msg+": still failing",
		slices.Concat(attrs, []any{"err", err, "failures", n, "failing_for", roundDuration(now.Sub(since))})...)
}

// OK reports a successful attempt at the action key: if it was failing,
// one line "<msg>: recovered" is logged at INFO with the episode's failure
// count and duration. Cheap when nothing fails.
func (s *Summarizer) OK(ctx context.Context, key string) {
	if s.failing.Load() == 0 {
		return
	}
	msg, ep, ok := s.clear(key)
	if ok {
		s.log.InfoContext(ctx, msg+": recovered", "failures", ep.Failures, "failing_for", roundDuration(ep.Duration))
	}
}

// Clear ends the action key's episode without logging, for a caller that
// logs a recovery line of its own; ok is false when it was not failing.
func (s *Summarizer) Clear(key string) (Episode, bool) {
	if s.failing.Load() == 0 {
		return Episode{}, false
	}
	_, ep, ok := s.clear(key)
	return ep, ok
}

// Failing reports whether the action key is in an episode of failures.
func (s *Summarizer) Failing(key string) bool {
	if s.failing.Load() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.eps[key]
	return ok
}

func (s *Summarizer) clear(key string) (string, Episode, bool) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.eps[key]
	if !ok {
		return "", Episode{}, false
	}
	delete(s.eps, key)
	s.failing.Store(int32(len(s.eps)))
	return ep.msg, Episode{Failures: ep.total, Duration: now.Sub(ep.since)}, true
}

// roundDuration renders d for a log line: to the millisecond below a
// second, else to the second.
func roundDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
