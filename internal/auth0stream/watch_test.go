package auth0stream_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/sim"
)

// watchFixture is a Watch over a real receiver and buffer, fed the
// receiver's commits as the pipeline feeds it.
func watchFixture(t *testing.T) (*fixture, *auth0stream.Watch, store) {
	t.Helper()
	b := backends[1].open(t, buffer.Config{})
	f := newFixture(t, auth0stream.Config{}, tenant("acme", b))
	w, err := auth0stream.NewWatch("acme", auth0stream.WatchConfig{Grace: time.Minute}, tenantRegisterer(f.reg, "acme"), f.clock)
	require.NoError(t, err)
	return f, w, b
}

// feed hands the watch every commit the fixture recorded since from.
func feed(f *fixture, w *auth0stream.Watch, from int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.commits[from:] {
		w.Committed(c)
	}
	return len(f.commits)
}

// dated returns logs with their dates set to at + i·step.
func dated(t *testing.T, logs []sim.RawLog, at time.Time, step time.Duration) []auth0log.Log {
	out := decode(t, logs)
	for i := range out {
		out[i].Date = at.Add(time.Duration(i) * step)
	}
	return out
}

// TestWatchCountsWhatTheStreamMissed: the poller finding first a log dated
// after the stream's first commit is a miss once the grace has passed
// without the stream delivering it; logs from before the stream began,
// logs the stream delivers within the grace, and logs it stored while the
// poller was appending are not.
func TestWatchCountsWhatTheStreamMissed(t *testing.T) {
	f, w, _ := watchFixture(t)
	missed := func() float64 { return f.value("authpipe_stream_missed_events_total", "tenant", "acme") }
	logs := f.events(10)
	now := f.clock.Now()

	// Before the stream delivered anything, nothing is its miss.
	w.PolledFirst(dated(t, logs[:1], now.Add(-time.Hour), 0), now)
	require.Zero(t, missed())
	_, ok := w.LastEvent()
	require.False(t, ok)

	code, _ := f.push(sim.StreamJSONLines, logs[1:2])
	require.Equal(t, 200, code)
	n := feed(f, w, 0)
	last, ok := w.LastEvent()
	require.True(t, ok)
	require.True(t, now.Equal(last), "last event %s, want %s", last, now)
	recvLast, _ := f.recv.LastEvent("acme")
	require.True(t, recvLast.Equal(last), "the watch's last event is the receiver's")

	// Backfilled logs dated before the first commit: not counted.
	w.PolledFirst(dated(t, logs[2:3], now.Add(-time.Second), 0), now)
	// Old enough, never pushed: counted at once.
	f.clock.Advance(2 * time.Minute)
	w.PolledFirst(dated(t, logs[3:5], now.Add(time.Second), time.Second), f.clock.Now())
	require.Equal(t, 2.0, missed())

	// Young: held. The stream delivers one of them within the grace.
	young := dated(t, logs[5:8], f.clock.Now().Add(-10*time.Second), time.Second)
	w.PolledFirst(young, f.clock.Now())
	require.Equal(t, 2.0, missed())
	code, _ = f.push(sim.StreamJSONArray, logs[5:6])
	require.Equal(t, 200, code)
	n = feed(f, w, n)
	f.clock.Advance(49 * time.Second)
	require.Equal(t, 2.0, missed(), "held logs counted before their grace ended")
	f.clock.Advance(3 * time.Second)
	require.Equal(t, 4.0, missed(), "the two held logs the stream never delivered")

	// The stream stored a log between the poller's dedupe read and its
	// append: the poller reports it, but the stream was first.
	code, _ = f.push(sim.StreamJSONObject, logs[8:9])
	require.Equal(t, 200, code)
	feed(f, w, n)
	w.PolledFirst(dated(t, logs[8:9], f.clock.Now().Add(-5*time.Minute), 0), f.clock.Now())
	require.Equal(t, 4.0, missed())
}

// TestWatchRefusesBadSettings: a bad tenant name, a negative grace; the
// counter exists at zero once built, and another tenant's commits are not
// the watch's.
func TestWatchRefusesBadSettings(t *testing.T) {
	_, err := auth0stream.NewWatch("no spaces", auth0stream.WatchConfig{}, prometheus.NewRegistry(), clockwork.NewFakeClock())
	require.ErrorContains(t, err, `tenant "no spaces"`)
	_, err = auth0stream.NewWatch("acme", auth0stream.WatchConfig{Grace: -time.Second}, prometheus.NewRegistry(), nil)
	require.ErrorContains(t, err, "grace -1s")
	reg := prometheus.NewPedanticRegistry()
	w, err := auth0stream.NewWatch("acme", auth0stream.WatchConfig{}, reg, nil)
	require.NoError(t, err)
	w.Committed(auth0stream.Commit{Tenant: "beta", At: time.Now(), Records: 1, Logs: []auth0log.Log{{ID: "x"}}})
	_, ok := w.LastEvent()
	require.False(t, ok, "another tenant's commit")
	n, err := testutil.GatherAndCount(reg, "authpipe_stream_missed_events_total")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// TestWatchHeldWhileTheStreamIsDown: with the stream silent after its
// first delivery, every log the poller stores is held for its grace; the
// held logs are counted when their grace ends, page after page, except the
// one the stream delivers late but within its grace.
func TestWatchHeldWhileTheStreamIsDown(t *testing.T) {
	clock := clockwork.NewFakeClock()
	w, err := auth0stream.NewWatch("acme", auth0stream.WatchConfig{Grace: time.Minute}, prometheus.NewRegistry(), clock)
	require.NoError(t, err)
	start := clock.Now()
	w.Committed(auth0stream.Commit{Tenant: "acme", At: start, Logs: []auth0log.Log{{ID: "first", Date: start}}})

	// 30 pages of 100, one page a second, each dated as it is found.
	for p := range 30 {
		page := make([]auth0log.Log, 100)
		for i := range page {
			page[i] = auth0log.Log{ID: fmt.Sprintf("p%02d-%03d", p, i), Date: clock.Now()}
		}
		w.PolledFirst(page, clock.Now())
		clock.Advance(time.Second)
	}
	require.Zero(t, w.Missed(), "all within their grace")
	// The stream comes back and delivers one page-0 log late, within its grace.
	w.Committed(auth0stream.Commit{Tenant: "acme", At: clock.Now(), Logs: []auth0log.Log{{ID: "p00-007", Date: start}}})
	clock.Advance(30 * time.Second) // page 0 was found a minute ago: its grace ended, page 1's not yet
	require.Equal(t, 99.0, w.Missed(), "page 0 but the log delivered late")
	clock.Advance(30 * time.Second)
	require.Equal(t, 99.0+29*100, w.Missed(), "every page's grace ended")
}
