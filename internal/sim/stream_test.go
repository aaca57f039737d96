package sim_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// webhook is an httptest server that records what a stream pushes and
// answers with the scripted statuses, then 200.
type webhook struct {
	srv *httptest.Server

	mu       sync.Mutex
	script   []int
	bodies   [][]byte
	ids      [][]string // log_ids of each request, as parsed by the receiver's parser
	headers  []http.Header
	received []string // log_ids of the requests answered 200
}

func newWebhook(t *testing.T, script ...int) *webhook {
	w := &webhook{script: script}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		_, logs, err := auth0stream.ParseBody(body)
		var ids []string
		for _, l := range logs {
			ids = append(ids, l.ID)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.bodies = append(w.bodies, body)
		w.ids = append(w.ids, ids)
		w.headers = append(w.headers, r.Header.Clone())
		status := http.StatusOK
		if len(w.script) > 0 {
			status, w.script = w.script[0], w.script[1:]
		}
		if err != nil {
			status = http.StatusBadRequest
		}
		if status == http.StatusOK {
			w.received = append(w.received, ids...)
		}
		rw.WriteHeader(status)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhook) requests() [][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ids)
}

func (w *webhook) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.received)
}

// runStream runs s until the test ends.
func runStream(t *testing.T, s *sim.Stream) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		require.NoError(t, s.Run(ctx))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// followed returns an Auth0 simulator whose new logs stream s is offered.
func followed(s *sim.Stream) *sim.Auth0 {
	a := sim.NewAuth0(sim.Auth0Options{})
	s.Follow(a)
	return a
}

func addEvents(a *sim.Auth0, n int) []string {
	return a.Add(sim.GenerateEvents(rand.New(rand.NewPCG(uint64(n), 3)), n, time.Now().Add(-time.Hour), time.Second)...)
}

// TestStreamBodyFormats: what the simulator pushes in each format is what
// the receiver's parser reads: the records' log_ids and events verbatim.
func TestStreamBodyFormats(t *testing.T) {
	a := sim.NewAuth0(sim.Auth0Options{})
	var logs []sim.RawLog
	a.Subscribe(func(l []sim.RawLog) { logs = append(logs, l...) })
	addEvents(a, 5)
	for _, format := range sim.StreamFormats {
		t.Run(string(format), func(t *testing.T) {
			got, parsed, err := auth0stream.ParseBody(sim.StreamBody(format, logs))
			require.NoError(t, err)
			require.Equal(t, string(format), string(got))
			require.Len(t, parsed, len(logs))
			for i, l := range parsed {
				require.Equal(t, logs[i].ID, l.ID)
				require.Equal(t, string(logs[i].JSON), string(l.Raw))
			}
		})
	}
	require.Equal(t, `{"logs":[]}`, string(sim.StreamBody(sim.StreamJSONObject, nil)))
}

// TestAuth0Subscribe: every event Add stores reaches the subscribers once,
// in ingest (log_id) order, as the logs API serves it.
func TestAuth0Subscribe(t *testing.T) {
	a := sim.NewAuth0(sim.Auth0Options{})
	var got []sim.RawLog
	calls := 0
	a.Subscribe(func(l []sim.RawLog) { calls++; got = append(got, l...) })
	ids := append(addEvents(a, 3), addEvents(a, 4)...)
	a.Add() // nothing stored: no call
	require.Equal(t, 2, calls)
	require.Len(t, got, 7)
	for i, l := range got {
		require.Equal(t, ids[i], l.ID)
		raw, ok := a.Log(l.ID)
		require.True(t, ok)
		require.Equal(t, string(raw), string(l.JSON))
	}
}

// TestStreamToReceiver: a stream following the Auth0 simulator pushes every
// log, in each format, over real HTTP to the receiver, which stores each
// once in the Redis buffer, in log_id order.
func TestStreamToReceiver(t *testing.T) {
	for _, format := range sim.StreamFormats {
		t.Run(string(format), func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: testredis.Addr(t), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			buf, err := buffer.NewRedis(rdb, buffer.Config{Tenant: testredis.Name(t)}, buffer.Deps{})
			require.NoError(t, err)
			const tok = "Bearer sim-stream-0123456789"
			recv, err := auth0stream.New([]auth0stream.Tenant{{Name: "acme", Token: tok, Buffer: buf}}, auth0stream.Config{}, auth0stream.Deps{})
			require.NoError(t, err)
			srv := httptest.NewServer(recv)
			t.Cleanup(srv.Close)

			s, err := sim.NewStream(sim.StreamOptions{URL: srv.URL + "/auth0/logs/acme", Authorization: tok, Format: format, BatchSize: 50})
			require.NoError(t, err)
			a := followed(s)
			runStream(t, s)
			var ids []string
			for range 4 {
				ids = append(ids, addEvents(a, 250)...)
			}
			require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 20*time.Second, 10*time.Millisecond)

			st := s.Stats()
			require.Equal(t, 1000, st.Offered)
			require.Equal(t, 1000, st.Delivered)
			require.Equal(t, st.Requests, st.Deliveries)
			require.Equal(t, map[int]int{http.StatusOK: st.Requests}, st.Status)
			require.Zero(t, st.Retries+st.Errored+st.Dropped)

			require.NoError(t, buf.EnsureGroup(t.Context(), "check"))
			es, err := buf.Read(t.Context(), "check", "c", 2000, time.Millisecond)
			require.NoError(t, err)
			var got []string
			for _, e := range es {
				got = append(got, e.LogID)
			}
			require.Equal(t, ids, got)
		})
	}
}

// TestStreamHeaders: the Authorization token goes verbatim, the content
// type is application/json, and no token sends no header.
func TestStreamHeaders(t *testing.T) {
	for _, auth := range []string{"Bearer abc def", "plain-token", ""} {
		w := newWebhook(t)
		s, err := sim.NewStream(sim.StreamOptions{URL: w.srv.URL, Authorization: auth})
		require.NoError(t, err)
		runStream(t, s)
		addEvents(followed(s), 1)
		require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 5*time.Second, 5*time.Millisecond)
		w.mu.Lock()
		h := w.headers[0]
		w.mu.Unlock()
		require.Equal(t, "application/json", h.Get("Content-Type"))
		require.Equal(t, auth, h.Get("Authorization"))
		_, present := h["Authorization"]
		require.Equal(t, auth != "", present)
	}
}

// TestStreamTriesThreeTimesThenLater: a delivery is tried three times; if
// all fail it errors, newer logs go on meanwhile, and the errored delivery
// starts again after ErroredRetry, until it is accepted. Any non-2xx
// answer, and no answer, is a failure.
func TestStreamTriesThreeTimesThenLater(t *testing.T) {
	ctx := t.Context()
	w := newWebhook(t, http.StatusInternalServerError, http.StatusUnauthorized, http.StatusServiceUnavailable)
	clock := clockwork.NewFakeClock()
	s, err := sim.NewStream(sim.StreamOptions{URL: w.srv.URL, Clock: clock, RetryDelay: time.Second, ErroredRetry: time.Minute})
	require.NoError(t, err)
	a := followed(s)
	first := addEvents(a, 5)
	runStream(t, s)

	for try := 2; try <= 3; try++ {
		require.NoError(t, clock.BlockUntilContext(ctx, 1)) // the wait before the next try
		require.Len(t, w.requests(), try-1)
		clock.Advance(time.Second)
	}
	require.NoError(t, clock.BlockUntilContext(ctx, 1)) // errored: waiting a minute
	st := s.Stats()
	require.Equal(t, 3, st.Requests)
	require.Equal(t, 2, st.Retries)
	require.Equal(t, 1, st.Errored)
	require.Equal(t, 5, st.Pending)
	require.Equal(t, [][]string{first, first, first}, w.requests())

	second := addEvents(a, 2) // the stream goes on meanwhile
	require.Eventually(t, func() bool { return s.Stats().Delivered == 2 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, clock.BlockUntilContext(ctx, 1))
	clock.Advance(time.Minute)
	require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 5*time.Second, 5*time.Millisecond)

	require.Equal(t, [][]string{first, first, first, second, first}, w.requests())
	require.Equal(t, append(second, first...), w.got())
	st = s.Stats()
	require.Equal(t, map[int]int{500: 1, 401: 1, 503: 1, 200: 2}, st.Status)
	require.Equal(t, 7, st.Delivered)
	require.Equal(t, 2, st.Deliveries)
	require.Equal(t, 5, st.Requests)
}

// TestStreamNoAnswer: a webhook that is down counts as a failed try
// (status 0), and the delivery is kept until it answers.
func TestStreamNoAnswer(t *testing.T) {
	ctx := t.Context()
	w := newWebhook(t)
	url := w.srv.URL
	w.srv.Close() // nobody listens
	clock := clockwork.NewFakeClock()
	s, err := sim.NewStream(sim.StreamOptions{URL: url, Clock: clock, Tries: 1, ErroredRetry: time.Minute})
	require.NoError(t, err)
	addEvents(followed(s), 3)
	runStream(t, s)
	require.NoError(t, clock.BlockUntilContext(ctx, 1))
	st := s.Stats()
	require.Equal(t, map[int]int{0: 1}, st.Status)
	require.Equal(t, 1, st.Errored)
	require.Equal(t, 3, st.Pending)
}

// TestStreamDrops: a share of deliveries is dropped for good: never sent,
// their log_ids listed exactly; every other log arrives once. The same
// seed drops the same deliveries.
func TestStreamDrops(t *testing.T) {
	run := func(seed uint64) (dropped, got []string, all []string) {
		w := newWebhook(t)
		s, err := sim.NewStream(sim.StreamOptions{URL: w.srv.URL, DropRate: 0.3, Seed: seed, BatchSize: 10})
		require.NoError(t, err)
		a := followed(s)
		runStream(t, s)
		for range 10 {
			all = append(all, addEvents(a, 50)...)
		}
		require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 10*time.Second, 5*time.Millisecond)
		st := s.Stats()
		require.Equal(t, len(s.Dropped()), st.Dropped)
		require.Equal(t, len(all), st.Delivered+st.Dropped)
		return s.Dropped(), w.got(), all
	}
	dropped, got, all := run(1)
	require.NotEmpty(t, dropped)
	require.NotEmpty(t, got)
	require.Zero(t, len(dropped)%10, "whole deliveries are dropped")
	require.ElementsMatch(t, all, append(slices.Clone(got), dropped...))
	for _, id := range dropped {
		require.NotContains(t, got, id)
	}
	// Each Add offers its 50 logs at once, so the batches are the same in
	// every run: the same seed drops the logs at the same positions.
	positions := func(dropped, all []string) []int {
		var out []int
		for _, id := range dropped {
			out = append(out, slices.Index(all, id))
		}
		return out
	}
	again, _, allAgain := run(1)
	require.Equal(t, positions(dropped, all), positions(again, allAgain))
	other, _, allOther := run(2)
	require.NotEqual(t, positions(dropped, all), positions(other, allOther))
}

// TestStreamKeepFirst: the first KeepFirst deliveries are never dropped,
// whatever the drop rate.
func TestStreamKeepFirst(t *testing.T) {
	w := newWebhook(t)
	s, err := sim.NewStream(sim.StreamOptions{URL: w.srv.URL, DropRate: 1, KeepFirst: 2, BatchSize: 10})
	require.NoError(t, err)
	a := followed(s)
	runStream(t, s)
	ids := addEvents(a, 50)
	require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 10*time.Second, 5*time.Millisecond)
	require.ElementsMatch(t, ids[:20], w.got())
	require.Equal(t, ids[20:], s.Dropped())
}

// TestStreamPauses: after PauseAfter of failures the stream pauses and
// sends nothing, however long; Resume delivers what it holds.
func TestStreamPauses(t *testing.T) {
	ctx := t.Context()
	failures := make([]int, 1000)
	for i := range failures {
		failures[i] = http.StatusInternalServerError
	}
	w := newWebhook(t, failures...)
	clock := clockwork.NewFakeClock()
	s, err := sim.NewStream(sim.StreamOptions{URL: w.srv.URL, Clock: clock, Tries: 1,
		ErroredRetry: time.Minute, PauseAfter: 10 * time.Minute})
	require.NoError(t, err)
	addEvents(followed(s), 2)
	runStream(t, s)
	// Errored and Paused change together: once a failure is counted, the
	// stream is either paused or waiting for its next retry.
	for errored := 1; ; errored++ {
		require.Eventually(t, func() bool { return s.Stats().Errored == errored }, 5*time.Second, time.Millisecond)
		if s.Stats().Paused {
			break
		}
		require.Less(t, errored, 20, "never paused")
		require.NoError(t, clock.BlockUntilContext(ctx, 1))
		clock.Advance(time.Minute)
	}
	st := s.Stats()
	require.Equal(t, 11, st.Requests, "failed at 0, 1, …, 10 minutes")
	clock.Advance(time.Hour)
	time.Sleep(50 * time.Millisecond) // a paused stream has nothing to do; give it the chance to misbehave
	require.Equal(t, 11, s.Stats().Requests)

	w.mu.Lock()
	w.script = nil
	w.mu.Unlock()
	s.Resume()
	require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 5*time.Second, 5*time.Millisecond)
	require.False(t, s.Stats().Paused)
	require.Equal(t, 2, s.Stats().Delivered)
}

func TestNewStreamValidates(t *testing.T) {
	for _, tc := range []struct {
		opts sim.StreamOptions
		want string
	}{
		{sim.StreamOptions{}, "no URL"},
		{sim.StreamOptions{URL: "http://x", DropRate: 1.5}, "drop rate 1.5"},
		{sim.StreamOptions{URL: "http://x", DropRate: -0.1}, "drop rate -0.1"},
		{sim.StreamOptions{URL: "http://x", Format: "XML"}, `format "XML"`},
	} {
		_, err := sim.NewStream(tc.opts)
		require.ErrorContains(t, err, tc.want, fmt.Sprint(tc.opts))
	}
}

// TestStreamDroppedLogsArePolled: with a share of deliveries dropped for
// good, the receiver stores what the stream delivered, and a poller's
// append of every log the Auth0 simulator serves adds exactly the dropped
// ones: the stream's loss is measurable by log_id (part 2 counts it).
func TestStreamDroppedLogsArePolled(t *testing.T) {
	ctx := t.Context()
	rdb := redis.NewClient(&redis.Options{Addr: testredis.Addr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	buf, err := buffer.NewRedis(rdb, buffer.Config{Tenant: testredis.Name(t)}, buffer.Deps{})
	require.NoError(t, err)
	const tok = "Bearer sim-stream-drops-0123456789"
	var mu sync.Mutex
	delivered := map[string]bool{}
	recv, err := auth0stream.New([]auth0stream.Tenant{{Name: "acme", Token: tok, Buffer: buf}}, auth0stream.Config{},
		auth0stream.Deps{OnCommit: func(c auth0stream.Commit) {
			mu.Lock()
			defer mu.Unlock()
			for _, l := range c.Logs {
				delivered[l.ID] = true
			}
		}})
	require.NoError(t, err)
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)

	s, err := sim.NewStream(sim.StreamOptions{URL: srv.URL + "/auth0/logs", Authorization: tok,
		Format: sim.StreamJSONArray, BatchSize: 20, DropRate: 0.05, Seed: 5})
	require.NoError(t, err)
	a := followed(s)
	runStream(t, s)
	for range 10 {
		addEvents(a, 200)
	}
	require.Eventually(t, func() bool { return s.Stats().Pending == 0 }, 20*time.Second, 10*time.Millisecond)
	dropped := s.Dropped()
	require.NotEmpty(t, dropped)

	// The poller's view: every log the logs API serves, in pages.
	ids := a.LogIDs()
	var polled []string
	for from := 0; from < len(ids); from += 100 {
		page := ids[from:min(from+100, len(ids))]
		logs := make([]auth0log.Log, len(page))
		for i, id := range page {
			raw, ok := a.Log(id)
			require.True(t, ok)
			logs[i], err = auth0log.Decode(raw)
			require.NoError(t, err)
		}
		seen, err := buf.Seen(ctx, page)
		require.NoError(t, err)
		added, err := buf.Append(ctx, logs, page[len(page)-1])
		require.NoError(t, err)
		n := 0
		for i, id := range page {
			if !seen[i] {
				polled = append(polled, id)
				n++
			}
		}
		require.Equal(t, n, added)
	}
	require.ElementsMatch(t, dropped, polled, "the poller found exactly what the stream dropped")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, delivered, len(ids)-len(dropped))
	for _, id := range dropped {
		require.False(t, delivered[id])
	}
}

// TestStreamStopsWithDeliveriesPending: Run returns as soon as its context
// ends, even with deliveries in flight and more waiting: the one cut short
// is kept, not retried in a loop (authpipe sim must stop on SIGTERM).
func TestStreamStopsWithDeliveriesPending(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select { // a webhook that answers only when the test ends
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(release) })
	s, err := sim.NewStream(sim.StreamOptions{URL: hook.URL, BatchSize: 2})
	require.NoError(t, err)
	addEvents(followed(s), 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-arrived // the first delivery is in flight
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context's end")
	}
	require.Equal(t, 10, s.Stats().Pending, "nothing delivered, nothing dropped")
}
