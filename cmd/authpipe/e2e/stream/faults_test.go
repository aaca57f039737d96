package stream

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// elsewhere returns n logs that the world's Auth0 simulator does not hold
// (another tenant's simulator made them): only the stream can bring them.
func elsewhere(t *testing.T, n int) []sim.RawLog {
	t.Helper()
	other := sim.NewAuth0(sim.Auth0Options{})
	ids := other.Add(sim.GenerateEvents(newRNG(), n, time.Now(), time.Millisecond)...)
	out := make([]sim.RawLog, n)
	for i, id := range ids {
		raw, ok := other.Log(id)
		require.True(t, ok)
		out[i] = sim.RawLog{ID: id, JSON: raw}
	}
	return out
}

func logIDs(logs []sim.RawLog) []string {
	out := make([]string, len(logs))
	for i, l := range logs {
		out[i] = l.ID
	}
	return out
}

// seen asks the tenant's buffer (through package buffer, as authpipe
// does) which of ids it holds.
func (w *world) seen(addr string, ids []string) []bool {
	w.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	b, err := buffer.NewRedis(c, buffer.Config{Tenant: w.env.Tenant}, buffer.Deps{})
	require.NoError(w.t, err)
	got, err := b.Seen(w.t.Context(), ids)
	require.NoError(w.t, err)
	return got
}

// TestE2EStreamRefusalsStoreNothing: a wrong or missing token is 401; a
// body that is not a stream batch, a batch with a record without log_id
// (beside a good one) and a body over 10 MiB are 400/413 — and nothing of
// them is stored. The same logs pushed right afterwards are stored and
// reach Segment.
func TestE2EStreamRefusalsStoreNothing(t *testing.T) {
	t.Parallel()
	addr := testredis.Addr(t)
	w := newWorld(t, addr)
	w.start()
	logs := elsewhere(t, 3)
	ids := logIDs(logs)
	good := sim.StreamBody(sim.StreamJSONArray, logs)
	noLogID := []byte(`[` + strings.TrimSuffix(strings.TrimPrefix(string(sim.StreamBody(sim.StreamJSONArray, logs[:2])), "["), "]") +
		`,{"data":` + string(logs[2].JSON) + `}]`)
	huge := make([]byte, 0, 11<<20)
	huge = append(huge, '[')
	for len(huge) < 10<<20+1 {
		huge = append(huge, sim.StreamBody(sim.StreamJSONLines, logs[:1])...)
	}

	for _, tc := range []struct {
		name, auth string
		body       []byte
		code       int
		msg        string
	}{
		{"wrong token", "Bearer not-the-token-0123456789abcdef0123", good, http.StatusUnauthorized, "unauthorized"},
		{"no token", "", good, http.StatusUnauthorized, "unauthorized"},
		{"garbage", streamToken, []byte("this is not a log stream batch"), http.StatusBadRequest, "nothing of this request stored"},
		{"a record without log_id", streamToken, noLogID, http.StatusBadRequest, "record 2"},
		{"oversize", streamToken, huge, http.StatusRequestEntityTooLarge, "over 10485760 bytes"},
	} {
		code, msg := w.post(tc.auth, tc.body)
		require.Equal(t, tc.code, code, "%s: %s", tc.name, msg)
		require.Contains(t, msg, tc.msg, tc.name)
	}
	require.Equal(t, []bool{false, false, false}, w.seen(addr, ids), "a refused request stored logs")
	require.Zero(t, w.metric(`authpipe_stream_events_total{outcome="new"`))
	require.Equal(t, 2.0, w.metric(`authpipe_stream_requests_total{code="401"`))
	require.Equal(t, 2.0, w.metric(`authpipe_stream_requests_total{code="400"`))
	require.Equal(t, 1.0, w.metric(`authpipe_stream_requests_total{code="413"`))

	code, msg := w.post(streamToken, good)
	require.Equal(t, http.StatusOK, code, msg)
	require.JSONEq(t, `{"records":3,"new":3}`, msg)
	require.Equal(t, []bool{true, true, true}, w.seen(addr, ids))
	e2etest.WaitDelivered(t, w.segment, w.env.Tenant, ids, 30*time.Second)
	w.requireNoStreamSecrets()
	require.NotContains(t, w.logs.String(), "not-the-token-0123456789abcdef0123", "a refused token reached the logs")

	// The status page shows both sources.
	resp, err := http.Get("http://" + w.env.Listen + "/")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(page), "Stored first by the <strong>Log Stream</strong> (pushed): 3 (100.0%) · by the <strong>poller</strong>: 0 (0.0%).")
}

// TestE2EStreamBufferFullThenRetried: while Segment fails, the buffer
// fills (AUTHPIPE_BUFFER_MAX_EVENTS) and the receiver answers 503 storing
// nothing; the stream keeps its deliveries errored and retries them, and
// once Segment is back and the buffer drains they are answered 200 and
// reach Segment. The logs exist only in the stream: the poller cannot
// have stored them.
func TestE2EStreamBufferFullThenRetried(t *testing.T) {
	t.Parallel()
	w := newWorld(t, testredis.Addr(t), "AUTHPIPE_BUFFER_MAX_EVENTS=40")
	w.start()
	w.segment.SetStatus(http.StatusInternalServerError)
	s := w.newStream(sim.StreamOptions{Format: sim.StreamJSONLines, BatchSize: 20,
		RetryDelay: 100 * time.Millisecond, ErroredRetry: time.Second})
	logs := elsewhere(t, 200)
	s.Offer(logs...)
	e2etest.WaitFor(t, 30*time.Second, func() bool { return s.Stats().Status[http.StatusServiceUnavailable] >= 3 },
		func() string { return fmt.Sprintf("no 503 while the buffer is full: %+v", s.Stats()) })
	require.Positive(t, w.metric(`authpipe_stream_events_total{outcome="full"`))
	require.Positive(t, s.Stats().Errored, "deliveries that failed three tries are kept for later")
	require.Less(t, s.Stats().Delivered, len(logs))

	w.segment.SetStatus(0)
	e2etest.WaitFor(t, 90*time.Second, func() bool { return s.Stats().Delivered == len(logs) },
		func() string { return fmt.Sprintf("stream: %+v", s.Stats()) })
	e2etest.WaitDelivered(t, w.segment, w.env.Tenant, logIDs(logs), 90*time.Second)
	e2etest.RequireExactlyOnceByMessageID(t, w.segment, w.env.Tenant, logIDs(logs))
}

// TestE2EStreamKill9LosesNothing: authpipe is killed with SIGKILL (or
// stopped with SIGTERM: the receiver stops with the pollers, before the
// forwarder drains and the buffer closes) while the stream pushes and the
// poller polls; the stream's deliveries that were not answered 200 are
// retried (errored, then again) and the poller resumes from its checkpoint
// after the restart. Every log reaches Segment under its one messageId.
func TestE2EStreamKill9LosesNothing(t *testing.T) {
	t.Parallel()
	for _, sig := range []string{"SIGKILL", "SIGTERM"} {
		t.Run(sig, func(t *testing.T) {
			t.Parallel()
			testStreamStopLosesNothing(t, sig)
		})
	}
}

func testStreamStopLosesNothing(t *testing.T, sig string) {
	w := newWorld(t, testredis.Addr(t))
	p := w.start()
	s := w.newStream(sim.StreamOptions{Format: sim.StreamJSONObject, BatchSize: 50,
		RetryDelay: 200 * time.Millisecond, ErroredRetry: 500 * time.Millisecond, Timeout: 2 * time.Second})

	var (
		mu  sync.Mutex
		all []string
	)
	stopAdding := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopAdding:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ids := w.add(20)
			mu.Lock()
			all = append(all, ids...)
			mu.Unlock()
		}
	})
	e2etest.WaitFor(t, 20*time.Second, func() bool { return s.Stats().Delivered >= 1000 },
		func() string { return fmt.Sprintf("stream: %+v", s.Stats()) })
	if sig == "SIGKILL" {
		p.Kill()
	} else {
		p.Stop(t, 15*time.Second)
		require.NoError(t, p.Err(), "authpipe exits 0 after SIGTERM")
		require.Contains(t, w.logs.String(), "authpipe stopped")
	}
	killedAt := s.Stats()
	time.Sleep(time.Second)
	w.start()
	e2etest.WaitFor(t, 20*time.Second, func() bool { return s.Stats().Delivered >= killedAt.Delivered+1000 },
		func() string { return fmt.Sprintf("stream after restart: %+v", s.Stats()) })
	close(stopAdding)
	wg.Wait()
	e2etest.WaitFor(t, 60*time.Second, func() bool { return s.Stats().Pending == 0 },
		func() string { return fmt.Sprintf("stream: %+v", s.Stats()) })
	st := s.Stats()
	require.Positive(t, st.Status[0]+st.Errored, "some deliveries failed while authpipe was down")
	t.Logf("stream: %d logs in %d deliveries, %d requests, %d without answer, %d errored", st.Delivered, st.Deliveries, st.Requests, st.Status[0], st.Errored)

	e2etest.WaitDelivered(t, w.segment, w.env.Tenant, all, 90*time.Second)
	dup := e2etest.RequireExactlyOnceByMessageID(t, w.segment, w.env.Tenant, all)
	t.Logf("%d logs delivered, %d redelivered copies under their messageId", len(all), dup)
}

// fakeAM is an Alertmanager that records the alerts posted to it, with
// when each first arrived.
type fakeAM struct {
	mu    sync.Mutex
	first map[string]time.Time // alertname → first arrival
	srv   *httptest.Server
}

func newFakeAM(t *testing.T) *fakeAM {
	am := &fakeAM{first: map[string]time.Time{}}
	am.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/alerts" || json.NewDecoder(r.Body).Decode(&alerts) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		now := time.Now()
		am.mu.Lock()
		for _, a := range alerts {
			if _, ok := am.first[a.Labels["alertname"]]; !ok {
				am.first[a.Labels["alertname"]] = now
			}
		}
		am.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(am.srv.Close)
	return am
}

func (am *fakeAM) arrived(name string) (time.Time, bool) {
	am.mu.Lock()
	defer am.mu.Unlock()
	at, ok := am.first[name]
	return at, ok
}

const attackRules = `rules:
  - name: PushedBruteForce
    types: [f, fp, fu]
    group_by: ip
    window: 5m
    threshold: 20
    every: 1h
    severity: warning
    annotations:
      summary: "{{ .Value }} failed logins from IP {{ .Group }}"
`

// TestE2EPushedAttackAlertsWithin2s: an attack pushed by the stream trips
// its threshold rule within 2 s of the push, while the poller waits its
// slow interval (1m) and the rule's schedule is an hour: only the pushed
// path can have raised it.
func TestE2EPushedAttackAlertsWithin2s(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"redis", "embedded"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testPushedAttackAlerts(t, backend)
		})
	}
}

func testPushedAttackAlerts(t *testing.T, backend string) {
	am := newFakeAM(t)
	rules := filepath.Join(t.TempDir(), "rules.yml")
	require.NoError(t, os.WriteFile(rules, []byte(attackRules), 0o600))
	redisAddr, extra := "", []string{"AUTHPIPE_DATA_DIR=" + t.TempDir()}
	if backend == "redis" {
		redisAddr, extra = testredis.Addr(t), nil
	}
	w := newWorld(t, redisAddr, append(extra, "ALERTMANAGER_URL="+am.srv.URL, "AUTHPIPE_RULES="+rules,
		"AUTHPIPE_STREAM_POLL_INTERVAL=1m")...)
	w.start()
	w.warmUp(sim.StreamJSONLines)
	e2etest.WaitFor(t, 10*time.Second, func() bool { return w.metric("authpipe_auth0_poll_interval_seconds") == 60 },
		func() string { return "the poller did not slow down" })
	polledBefore := w.metric("authpipe_auth0_events_first_total")

	attack := make([]sim.Event, 25)
	for i := range attack {
		attack[i] = sim.Event{Type: "fp", IP: "203.0.113.77", UserName: fmt.Sprintf("user%d@example.com", i),
			Connection: "Username-Password-Authentication", Date: time.Now()}
	}
	ids := w.auth0.Add(attack...)
	pushed := time.Now()
	code, msg := w.post(streamToken, sim.StreamBody(sim.StreamJSONArray, w.raws(ids)))
	require.Equal(t, http.StatusOK, code, msg)
	require.Eventually(t, func() bool { _, ok := am.arrived("PushedBruteForce"); return ok },
		2*time.Second, 10*time.Millisecond, "no alert within 2 s of the push")
	at, _ := am.arrived("PushedBruteForce")
	t.Logf("alert reached Alertmanager %s after the push began", at.Sub(pushed).Round(time.Millisecond))
	require.Equal(t, polledBefore, w.metric("authpipe_auth0_events_first_total"), "the poller stored part of the attack")
}
