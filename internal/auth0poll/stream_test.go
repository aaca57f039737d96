package auth0poll

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
)

// fakeStream is a Log Stream whose last delivery the test sets.
type fakeStream struct {
	mu    sync.Mutex
	last  time.Time
	first []string // log_ids told PolledFirst, in order
}

func (s *fakeStream) LastEvent() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, !s.last.IsZero()
}

func (s *fakeStream) delivered(at time.Time) {
	s.mu.Lock()
	s.last = at
	s.mu.Unlock()
}

func (s *fakeStream) PolledFirst(logs []auth0log.Log, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range logs {
		s.first = append(s.first, l.ID)
	}
}

func (s *fakeStream) told() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.first...)
}

// newStreamPoller builds a poller with a Log Stream: 10s normally, 5m
// while the stream delivered within 2m.
func (h *harness) newStreamPoller(s Stream) (*Poller, *prometheus.Registry) {
	h.t.Helper()
	cfg := h.config()
	cfg.StreamPollInterval = 5 * time.Minute
	cfg.StreamHealthyWindow = 2 * time.Minute
	reg := prometheus.NewPedanticRegistry()
	p, err := New(cfg, h.buf, Deps{Logger: h.logger(), Registerer: reg, Clock: h.clock, Stages: metrics.NewStages(reg), Stream: s})
	require.NoError(h.t, err)
	return p, reg
}

// advanceIdle moves the fake clock by d in steps of step, letting the
// poller finish whatever each step wakes it for.
func (h *harness) advanceIdle(d, step time.Duration) {
	h.t.Helper()
	for end := h.clock.Now().Add(d); h.clock.Now().Before(end); {
		h.clock.Advance(step)
		h.idle()
	}
}

// TestStreamHealthySlowsPolling: while the stream delivers, the poller
// waits StreamPollInterval after a caught-up poll; when the stream falls
// silent it polls again as soon as the healthy window ends — not at the
// end of the slow wait — and then every PollInterval.
func TestStreamHealthySlowsPolling(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	s := &fakeStream{}
	s.delivered(h.clock.Now())
	p, _ := h.newStreamPoller(s)
	h.run(p)
	h.drive("first poll", func() bool { return len(h.requestedFroms()) == 1 })
	h.idle()
	requests := func() int { return len(h.requestedFroms()) }

	// The stream keeps delivering for 4m50s: no poll in that time.
	for range 29 {
		h.advanceIdle(10*time.Second, 10*time.Second)
		s.delivered(h.clock.Now())
	}
	require.Equal(t, 1, requests(), "polled while the stream was healthy")
	require.Equal(t, 300.0, testutil.ToFloat64(p.m.interval))
	// The slow wait ends 5m after the first poll.
	h.advanceIdle(10*time.Second, 10*time.Second)
	require.Equal(t, 2, requests())
	pollAt := h.clock.Now()
	require.Empty(t, h.logRecords("auth0 poller behind the head of the logs; catching up"),
		"the slow interval's wait is not falling behind")

	// Silence: the last delivery was 10s before the poll, so the stream is
	// unhealthy 1m50s after it and the poller polls then, not at 5m.
	h.advanceIdle(110*time.Second-time.Second, time.Second)
	require.Equal(t, 2, requests(), "polled before the healthy window ended")
	h.advanceIdle(time.Second, time.Second)
	require.Equal(t, 3, requests(), "no poll when the stream fell silent")
	require.Equal(t, 110*time.Second, h.clock.Since(pollAt))
	require.Equal(t, 10.0, testutil.ToFloat64(p.m.interval))
	h.advanceIdle(10*time.Second, time.Second)
	require.Equal(t, 4, requests(), "not back at AUTH0_POLL_INTERVAL")
	require.Len(t, h.logRecords("log stream silent: polling at the normal interval"), 1)
	require.Empty(t, h.logRecords("auth0 poller behind the head of the logs; catching up"),
		"returning to the normal interval is not falling behind")
}

// TestStreamToldWhatThePollerFoundFirst: before appending a page the
// poller asks the buffer which logs it holds and, once the page is
// stored, tells the stream the others; authpipe_auth0_events_first_total
// counts them.
func TestStreamToldWhatThePollerFoundFirst(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ids := h.addEvents(5, h.clock.Now().Add(-time.Minute), time.Second)
	// The stream pushed two of them already.
	var pushed []auth0log.Log
	for _, id := range []string{ids[1], ids[3]} {
		raw, ok := h.auth0.Log(id)
		require.True(t, ok)
		l, err := auth0log.Decode(raw)
		require.NoError(t, err)
		pushed = append(pushed, l)
	}
	_, err := h.buf.Append(context.Background(), pushed, "")
	require.NoError(t, err)

	s := &fakeStream{}
	p, _ := h.newStreamPoller(s)
	h.run(p)
	h.drive("page stored", func() bool { return polled(p) == 5 })
	h.idle()
	require.Equal(t, []string{ids[0], ids[2], ids[4]}, s.told())
	require.Equal(t, 3.0, testutil.ToFloat64(p.m.added))
	require.ElementsMatch(t, ids, h.streamIDs())
}

// TestStreamNotToldWhatALostBufferRepolls: after the buffer lost its data
// (and its dedupe record with it), the logs polled again are not told to
// the stream as found first — they were stored before; logs that arrive
// afterwards are.
func TestStreamNotToldWhatALostBufferRepolls(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	ids := h.addEvents(50, h.clock.Now().Add(-time.Hour), time.Minute)
	s := &fakeStream{}
	p, _ := h.newStreamPoller(s)
	h.run(p)
	h.drive("first poll", func() bool { return polled(p) >= float64(len(ids)) })
	h.idle()
	require.Equal(t, ids, s.told())

	keys, err := h.rdb.Keys(ctx, "authpipe:{"+h.tenant+"}:*").Result()
	require.NoError(t, err)
	require.NoError(t, h.rdb.Del(ctx, keys...).Err())
	// The next page's append finds the loss; that log, dated before it was
	// found, is not counted either: nothing up to the loss is.
	trigger := h.addEvents(1, h.clock.Now().Add(-time.Minute), 0)
	h.drive("re-poll", func() bool { return len(h.streamIDs()) >= len(ids)+1 })
	h.idle()
	require.ElementsMatch(t, append(slices.Clone(ids), trigger...), h.streamIDs())
	require.Len(t, h.logRecords("the buffer lost data and nothing was known delivered: polling Auth0's whole retention window again"), 1)
	require.Equal(t, ids, s.told(), "re-polled logs told again")

	more := h.addEvents(3, h.clock.Now().Add(time.Minute), time.Second)
	h.drive("new logs", func() bool { return len(h.streamIDs()) >= len(ids)+1+len(more) })
	h.idle()
	require.Equal(t, append(slices.Clone(ids), more...), s.told())
}
