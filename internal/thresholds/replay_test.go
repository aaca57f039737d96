package thresholds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// Replay runs Auth0 logs through rules in memory, in event time, with the
// counting, evaluation and alert lifecycle of the engine (the model `rules
// test` runs): each Add counts a batch at the clock of its newest event,
// real-time path included, after running every rule's check for each step
// of event time that has passed. It is how the simulators' traffic is held
// to the shipped rules: background traffic must raise nothing, scripted
// attacks their rule. Memory is bounded as on the embedded buffer: counts
// expire with their window.
type Replay struct {
	ev    *evaluator
	mem   *store.Memory
	clock *clockwork.FakeClock
	step  time.Duration
	next  time.Time // the next check; zero before the first Add
	seq   int
	fired *firingLog
}

// firingLog keeps the alerts that were raised (not re-sends, not
// resolutions).
type firingLog struct {
	clock  clockwork.Clock
	alerts []notify.Alert
}

func (f *firingLog) Notify(alerts []notify.Alert) {
	for _, a := range alerts {
		if !a.Resolved(f.clock.Now()) {
			f.alerts = append(f.alerts, a)
		}
	}
}

// NewReplay returns a Replay of rules rs for tenant that checks every
// rule every step of event time (a rule's own schedule is not used).
func NewReplay(rs *rules.Set, tenant string, step time.Duration) (*Replay, error) {
	if step <= 0 {
		return nil, errors.New("replay step: want more than 0")
	}
	clock := clockwork.NewFakeClockAt(time.Unix(0, 0))
	mem := store.NewLocal(clock)
	fired := &firingLog{clock: clock}
	ev := newMemoryEvaluator(rs, tenant, mem, clock, fired, true)
	return &Replay{ev: ev, mem: mem, clock: clock, step: step, fired: fired}, nil
}

// Add counts a batch of raw Auth0 logs, in order, and runs the checks due
// before its newest event. Logs dated before an earlier batch's newest
// event are counted at that time.
func (r *Replay) Add(ctx context.Context, logs ...json.RawMessage) error {
	events := make([]store.Event, 0, len(logs))
	ids := make([]string, 0, len(logs))
	newest := r.clock.Now()
	for _, raw := range logs {
		r.seq++
		id := strconv.Itoa(r.seq)
		l, err := auth0log.DecodeShared(raw)
		if err != nil {
			return fmt.Errorf("replay log %d: %w", r.seq, err)
		}
		e := store.NewEvent(id, l)
		events = append(events, e)
		ids = append(ids, id)
		if e.Date.After(newest) {
			newest = e.Date
		}
	}
	if r.next.IsZero() {
		r.clock.Advance(newest.Sub(r.clock.Now()))
		r.next = newest.Add(r.step)
	}
	if err := r.checkUntil(ctx, newest); err != nil {
		return err
	}
	r.clock.Advance(newest.Sub(r.clock.Now()))
	if err := r.ev.countEvents(ctx, events, nil); err != nil {
		return err
	}
	r.mem.Forget(ids)
	r.mem.Prune(r.clock.Now())
	return nil
}

// checkUntil runs every rule's check at each step up to t.
func (r *Replay) checkUntil(ctx context.Context, t time.Time) error {
	for !r.next.After(t) {
		r.clock.Advance(r.next.Sub(r.clock.Now()))
		for _, rule := range r.ev.rules.Load().Rules {
			if _, err := r.ev.check(ctx, rule, r.next); err != nil {
				return err
			}
		}
		r.next = r.next.Add(r.step)
	}
	return nil
}

// Fired returns the alerts raised so far, in order (firing alerts only: no
// re-sends, no resolutions).
func (r *Replay) Fired() []notify.Alert { return r.fired.alerts }

// Replay raises an alert once per breaching group, at the clock of the
// events, and forgets counts as their window passes: the same burst an
// hour later raises it again.
func TestReplay(t *testing.T) {
	rs := thtest.Rules(t, strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1m"))
	_, err := NewReplay(rs, "acme", 0)
	require.ErrorContains(t, err, "replay step")
	rp, err := NewReplay(rs, "acme", 10*time.Second)
	require.NoError(t, err)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	raws := func(date time.Time) []json.RawMessage {
		var out []json.RawMessage
		for _, l := range thtest.Burst(t, 25, "fp", "203.0.113.7", date) {
			out = append(out, l.Raw)
		}
		return out
	}
	ctx := context.Background()
	require.NoError(t, rp.Add(ctx, raws(at)...))
	require.NoError(t, rp.Add(ctx, raws(at.Add(time.Minute))...))
	require.Len(t, rp.Fired(), 1, "one alert for the group while it breaches")
	a := rp.Fired()[0]
	require.Equal(t, "203.0.113.7", a.Labels["ip"])
	require.Equal(t, "acme", a.Labels["tenant"])
	require.True(t, a.StartsAt.Equal(at), "raised at the burst's time: %s", a.StartsAt)

	require.NoError(t, rp.Add(ctx, raws(at.Add(time.Hour))...))
	require.Len(t, rp.Fired(), 2, "resolved in between, raised again")
	require.True(t, rp.Fired()[1].StartsAt.Equal(at.Add(time.Hour)))
}
