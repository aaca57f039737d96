package forward

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

const (
	writeKey   = "wk-secret-value-1234"
	waitFor    = 30 * time.Second
	pollEvery  = 20 * time.Millisecond
	piiEmail   = "victim.person@example.com"
	piiIP      = "203.0.113.77"
	piiIPField = `"` + piiIP + `"`
)

// fixture is one tenant's real buffer on the shared test Redis, a Segment
// simulator over real HTTP, and an Auth0 simulator that makes the events.
type fixture struct {
	t      *testing.T
	tenant string
	buf    *buffer.Redis
	seg    *sim.Segment
	srv    *httptest.Server
	auth0  *sim.Auth0
	logs   *syncBuffer
	log    *slog.Logger
	ctx    context.Context

	loseAnswers atomic.Bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tenant := testredis.Name(t)
	buf, err := buffer.NewRedis(testredis.Client(t), buffer.Config{Tenant: tenant}, buffer.Deps{})
	require.NoError(t, err)
	seg := sim.NewSegment(sim.SegmentOptions{WriteKey: writeKey})
	fx := &fixture{
		t: t, tenant: tenant, buf: buf, seg: seg,
		auth0: sim.NewAuth0(sim.Auth0Options{}),
		logs:  &syncBuffer{},
		ctx:   t.Context(),
	}
	fx.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fx.loseAnswers.Load() {
			// Segment records the batch, but its answer is lost.
			seg.ServeHTTP(httptest.NewRecorder(), r)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		seg.ServeHTTP(w, r)
	}))
	t.Cleanup(fx.srv.Close)
	fx.log = slog.New(slog.NewJSONHandler(fx.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("forwarder logs:\n%s", fx.logs.String())
		}
	})
	return fx
}

func (fx *fixture) config() Config {
	return Config{
		Tenant:        fx.tenant,
		WriteKey:      writeKey,
		Endpoint:      fx.srv.URL,
		FlushInterval: 50 * time.Millisecond,
		Consumer:      "c1",
		MinBackoff:    20 * time.Millisecond,
		MaxBackoff:    300 * time.Millisecond,
		ReclaimIdle:   3 * time.Second,
		DrainTimeout:  2 * time.Second,
		HashKey:       config.Secret(testKey),
	}
}

// add makes events with the Auth0 simulator and appends them to the buffer.
func (fx *fixture) add(events ...sim.Event) []auth0log.Log {
	fx.t.Helper()
	ids := fx.auth0.Add(events...)
	logs := make([]auth0log.Log, len(ids))
	for i, id := range ids {
		raw, ok := fx.auth0.Log(id)
		require.True(fx.t, ok)
		l, err := auth0log.Decode(raw)
		require.NoError(fx.t, err)
		logs[i] = l
	}
	fx.appendLogs(logs)
	return logs
}

func (fx *fixture) appendLogs(logs []auth0log.Log) {
	fx.t.Helper()
	n, err := fx.buf.Append(fx.ctx, logs, logs[len(logs)-1].ID)
	require.NoError(fx.t, err)
	require.Equal(fx.t, len(logs), n)
}

func (fx *fixture) generate(n int) []auth0log.Log {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	events := sim.GenerateEvents(rng, n, time.Now().Add(-time.Hour), time.Second)
	events[0].UserName, events[0].IP = piiEmail, piiIP
	return fx.add(events...)
}

// liveForwarder is a forwarder running in the background.
type liveForwarder struct {
	f      *Forwarder
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (fx *fixture) start(cfg Config) *liveForwarder {
	fx.t.Helper()
	reg := prometheus.NewPedanticRegistry()
	requests, err := NewRequests(reg)
	require.NoError(fx.t, err)
	treg := metrics.Tenant(reg, cfg.Tenant) // as package pipeline hands it out
	f, err := New(cfg, fx.buf, Deps{Logger: fx.log, Registerer: treg, Stages: metrics.NewStages(treg), Requests: requests})
	require.NoError(fx.t, err)
	ctx, cancel := context.WithCancel(fx.ctx)
	r := &liveForwarder{f: f, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- f.Run(ctx) }()
	fx.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// stop cancels the forwarder and returns Run's result.
func (r *liveForwarder) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitFor):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

func (fx *fixture) stats() buffer.Stats {
	fx.t.Helper()
	st, err := fx.buf.Stats(fx.ctx, DefaultGroup)
	require.NoError(fx.t, err)
	return st
}

func (fx *fixture) waitDrained() {
	fx.t.Helper()
	require.Eventually(fx.t, func() bool {
		st := fx.stats()
		return st.Backlog == 0 && st.Pending == 0
	}, waitFor, pollEvery, "backlog never reached 0: %+v", fx.stats())
}

func (fx *fixture) waitCount(n int) {
	fx.t.Helper()
	require.Eventually(fx.t, func() bool { return fx.seg.Count() >= n }, waitFor, pollEvery,
		"Segment has %d distinct messages, want %d", fx.seg.Count(), n)
}

// requireDelivered checks that Segment holds exactly the messages of logs.
func (fx *fixture) requireDelivered(logs []auth0log.Log) map[string]int {
	fx.t.Helper()
	ids := fx.seg.MessageIDs()
	require.Len(fx.t, ids, len(logs))
	for _, l := range logs {
		require.Contains(fx.t, ids, MessageID(fx.tenant, l.ID))
	}
	return ids
}

func (fx *fixture) deadLetters() []buffer.DeadLetter {
	fx.t.Helper()
	dl, err := fx.buf.DeadLetters(fx.ctx, 100)
	require.NoError(fx.t, err)
	return dl
}

// requireNoPII checks the logs never carried an event body or the key.
func (fx *fixture) requireNoPII() {
	fx.t.Helper()
	out := fx.logs.String()
	require.NotEmpty(fx.t, out)
	for _, s := range []string{piiEmail, piiIP, writeKey} {
		require.NotContains(fx.t, out, s)
	}
}

func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func TestForwardDeliversEveryEventOnce(t *testing.T) {
	fx := newFixture(t)
	logs := fx.generate(300)
	r := fx.start(fx.config())

	fx.waitCount(len(logs))
	fx.waitDrained()
	ids := fx.requireDelivered(logs)
	for id, n := range ids {
		require.Equal(t, 1, n, "messageId %s sent more than once without a fault", id)
	}
	require.Empty(t, fx.deadLetters())
	require.NoError(t, r.stop(t))

	tenant := map[string]string{"tenant": fx.tenant}
	require.Equal(t, 300.0, metricValue(t, r.reg, "authpipe_forward_events_acked_total", tenant))
	require.Equal(t, 0.0, metricValue(t, r.reg, "authpipe_forward_in_flight_events", tenant))
	require.Equal(t, 0.0, metricValue(t, r.reg, "authpipe_forward_retries_total", tenant))
	require.Greater(t, metricValue(t, r.reg, "authpipe_forward_segment_requests_total", map[string]string{"code": "2xx"}), 0.0)
	require.Equal(t, 0.0, metricValue(t, r.reg, "authpipe_forward_segment_requests_total", map[string]string{"code": "5xx"}))
	stage := map[string]string{"stage": metrics.StageForward, "tenant": fx.tenant}
	require.Equal(t, 300.0, metricValue(t, r.reg, "authpipe_stage_events_received_total", stage))
	require.Equal(t, 300.0, metricValue(t, r.reg, "authpipe_stage_events_acked_total", stage))

	// The message of the first event, as Segment holds it.
	var first map[string]any
	for _, raw := range fx.seg.Messages() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		if m["messageId"] == MessageID(fx.tenant, logs[0].ID) {
			first = m
		}
	}
	require.NotNil(t, first)
	want, err := Map(fx.tenant, logs[0], testKey, PIIPolicy{})
	require.NoError(t, err)
	require.Equal(t, "track", first["type"])
	require.Equal(t, want.Event, first["event"])
	require.NotContains(t, first, "context", "the default policy hashes ip and user_agent: no context")
	props := first["properties"].(map[string]any)
	require.Equal(t, HashPII(testKey, piiIP), props["ip"])
	require.Equal(t, HashPII(testKey, piiEmail), props["user_name"])
	require.Equal(t, logs[0].ID, props["log_id"])
	fx.requireNoPII()
}

func TestForwardSurvivesOutageAndRateLimit(t *testing.T) {
	fx := newFixture(t)
	fx.seg.SetStatus(http.StatusServiceUnavailable)
	logs := fx.generate(60)
	r := fx.start(fx.config())

	require.Eventually(t, func() bool { return fx.seg.Stats().Status[503] >= 5 }, waitFor, pollEvery)
	require.Zero(t, fx.seg.Count())
	require.Equal(t, int64(len(logs)), fx.stats().Pending, "nothing acked while Segment fails")
	fx.seg.RateLimitNext(2, time.Second)
	fx.seg.SetStatus(0)

	fx.waitCount(len(logs))
	fx.waitDrained()
	fx.requireDelivered(logs)
	require.Empty(t, fx.deadLetters())
	require.Equal(t, 2, fx.seg.Stats().Status[429])
	require.NoError(t, r.stop(t))
	require.GreaterOrEqual(t, metricValue(t, r.reg, "authpipe_forward_segment_requests_total", map[string]string{"code": "5xx"}), 5.0)
	require.Equal(t, 2.0, metricValue(t, r.reg, "authpipe_forward_segment_requests_total", map[string]string{"code": "429"}))
	fx.requireNoPII()
}

func TestForwardIsolatesRejectedEvent(t *testing.T) {
	fx := newFixture(t)
	logs := fx.generate(40)
	bad := logs[7]
	fx.seg.RejectMessageID(MessageID(fx.tenant, bad.ID))
	r := fx.start(fx.config())

	fx.waitCount(len(logs) - 1)
	fx.waitDrained()
	dl := fx.deadLetters()
	require.Len(t, dl, 1)
	require.Equal(t, bad.ID, dl[0].LogID)
	require.True(t, strings.HasPrefix(dl[0].Reason, "segment_rejected: 400"), dl[0].Reason)
	require.JSONEq(t, string(bad.Raw), string(dl[0].Raw))
	ids := fx.seg.MessageIDs()
	require.Len(t, ids, len(logs)-1)
	require.NotContains(t, ids, MessageID(fx.tenant, bad.ID))
	// Once in its batch, once alone: a permanent answer is never retried.
	require.Equal(t, 2, fx.seg.Stats().Status[400])
	require.NoError(t, r.stop(t))
	require.Equal(t, 2.0, metricValue(t, r.reg, "authpipe_forward_segment_requests_total", map[string]string{"code": "400"}))
	fx.requireNoPII()
}

func TestForwardSizeGuardAndInvalidEvents(t *testing.T) {
	fx := newFixture(t)
	blob := strings.Repeat("z", 40_000)
	logs := fx.add(
		sim.Event{Type: "s", UserID: "auth0|ok", UserName: piiEmail},
		sim.Event{Type: "s", UserID: "auth0|big-details", Details: map[string]any{"blob": blob}},
		sim.Event{Type: "fp", UserID: "auth0|big-context", Extra: map[string]any{"security_context": blob}},
	)
	// An entry that cannot be decoded (its date is not RFC 3339).
	broken := fx.auth0.Add(sim.Event{Type: "f", Extra: map[string]any{"date": "yesterday"}})[0]
	raw, ok := fx.auth0.Log(broken)
	require.True(t, ok)
	fx.appendLogs([]auth0log.Log{{ID: broken, Date: time.Now().UTC(), Type: "f", Raw: raw}})

	r := fx.start(fx.config())
	fx.waitCount(2)
	fx.waitDrained()

	ids := fx.seg.MessageIDs()
	require.Len(t, ids, 2)
	require.Contains(t, ids, MessageID(fx.tenant, logs[0].ID))
	require.Contains(t, ids, MessageID(fx.tenant, logs[1].ID))
	for _, raw := range fx.seg.Messages() {
		var m struct {
			MessageID  string         `json:"messageId"`
			Properties map[string]any `json:"properties"`
		}
		require.NoError(t, json.Unmarshal(raw, &m))
		require.LessOrEqual(t, len(raw), MaxMessageBytes)
		if m.MessageID == MessageID(fx.tenant, logs[1].ID) {
			require.Equal(t, true, m.Properties["details_trimmed"])
			require.NotContains(t, m.Properties, "details")
		}
	}

	reasons := map[string]string{}
	for _, d := range fx.deadLetters() {
		reasons[d.LogID] = d.Reason
	}
	require.Len(t, reasons, 2)
	require.Regexp(t, `^oversize: \d+ bytes .*limit 32000$`, reasons[logs[2].ID])
	require.True(t, strings.HasPrefix(reasons[broken], "invalid: "), reasons[broken])

	require.NoError(t, r.stop(t))
	tenant := map[string]string{"tenant": fx.tenant}
	require.Equal(t, 1.0, metricValue(t, r.reg, "authpipe_forward_details_trimmed_total", tenant))
	require.Equal(t, 2.0, metricValue(t, r.reg, "authpipe_forward_events_acked_total", tenant))
	fx.requireNoPII()
}

// TestForwardShutdownAndRestart loses Segment's answers (Segment records
// the batch, the client sees 503): at shutdown every entry stays pending,
// and a new forwarder with the same consumer name delivers them again under
// the same messageIds, which Segment drops as duplicates.
func TestForwardShutdownAndRestart(t *testing.T) {
	fx := newFixture(t)
	fx.loseAnswers.Store(true)
	logs := fx.generate(50)
	cfg := fx.config()
	cfg.DrainTimeout = 200 * time.Millisecond
	first := fx.start(cfg)
	fx.waitCount(len(logs))
	require.NoError(t, first.stop(t))
	st := fx.stats()
	require.Equal(t, int64(len(logs)), st.Pending, "nothing acked: everything stays pending")
	require.Contains(t, fx.logs.String(), "will be redelivered after restart")

	fx.loseAnswers.Store(false)
	second := fx.start(cfg)
	fx.waitDrained()
	ids := fx.requireDelivered(logs)
	for id, n := range ids {
		require.GreaterOrEqual(t, n, 2, "messageId %s: the redelivered copy carries the same id", id)
	}
	require.Equal(t, len(logs), fx.seg.Count())
	require.Empty(t, fx.deadLetters())
	require.NoError(t, second.stop(t))
	require.Equal(t, float64(len(logs)), metricValue(t, second.reg, "authpipe_forward_events_acked_total",
		map[string]string{"tenant": fx.tenant}))
	fx.requireNoPII()
}

// TestForwardReclaimsFromCrashedConsumer leaves entries pending with a
// consumer that never comes back; the forwarder takes them over once idle.
func TestForwardReclaimsFromCrashedConsumer(t *testing.T) {
	fx := newFixture(t)
	logs := fx.generate(20)
	require.NoError(t, fx.buf.EnsureGroup(fx.ctx, DefaultGroup))
	got, err := fx.buf.Read(fx.ctx, DefaultGroup, "crashed", 100, time.Second)
	require.NoError(t, err)
	require.Len(t, got, len(logs))

	cfg := fx.config()
	cfg.ReclaimIdle = time.Second
	r := fx.start(cfg)
	fx.waitCount(len(logs))
	fx.waitDrained()
	fx.requireDelivered(logs)
	require.NoError(t, r.stop(t))
}

// TestForwardHeartbeatKeepsEntries checks that entries this forwarder is
// retrying are not reclaimed by another replica.
func TestForwardHeartbeatKeepsEntries(t *testing.T) {
	fx := newFixture(t)
	fx.seg.SetStatus(http.StatusServiceUnavailable)
	logs := fx.generate(10)
	cfg := fx.config()
	cfg.ReclaimIdle = 600 * time.Millisecond
	r := fx.start(cfg)
	require.Eventually(t, func() bool { return fx.stats().Pending == int64(len(logs)) }, waitFor, pollEvery)

	for range 5 {
		time.Sleep(300 * time.Millisecond)
		stolen, err := fx.buf.Reclaim(fx.ctx, DefaultGroup, "other-replica", cfg.ReclaimIdle, 100)
		require.NoError(t, err)
		require.Zero(t, len(stolen), "held entries must stay touched")
	}
	fx.seg.SetStatus(0)
	fx.waitDrained()
	fx.requireDelivered(logs)
	require.NoError(t, r.stop(t))
}

func TestForwardBadWriteKey(t *testing.T) {
	fx := newFixture(t)
	logs := fx.generate(10)
	cfg := fx.config()
	cfg.WriteKey = "wrong-key-do-not-log"
	cfg.DrainTimeout = 200 * time.Millisecond
	r := fx.start(cfg)
	require.Eventually(t, func() bool { return fx.seg.Stats().Status[401] >= 1 }, waitFor, pollEvery)
	require.Eventually(t, func() bool { return strings.Contains(fx.logs.String(), "Segment rejected the write key") },
		waitFor, pollEvery)
	rejected := fx.seg.Stats().Status[401]
	require.LessOrEqual(t, rejected, 2, "at most the batches already on their way")
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, rejected, fx.seg.Stats().Status[401], "paused: no more requests with a rejected key")

	stopped := time.Now()
	require.NoError(t, r.stop(t))
	require.Less(t, time.Since(stopped), 15*time.Second, "the one-minute pause is abortable by shutdown")
	require.Equal(t, rejected, fx.seg.Stats().Status[401])
	require.Zero(t, fx.seg.Count())
	require.Empty(t, fx.deadLetters(), "a bad write key is not the events' fault")
	require.Equal(t, int64(len(logs)), fx.stats().Pending)
	require.NotContains(t, fx.logs.String(), cfg.WriteKey)
}

func TestClientLoggerRedacts(t *testing.T) {
	logs := &syncBuffer{}
	l := clientLogger{log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	tr, err := Map("acme", decodeLog(t, map[string]any{"type": "s", "user_id": "u", "user_name": piiEmail, "ip": piiIP}), testKey, keepAll)
	require.NoError(t, err)
	l.Errorf("%s - %v", errTest, tr)
	l.Logf("response %d %s – %s", 400, "400 Bad Request", `{"echo":"`+piiEmail+`"}`)
	l.Logf("buffer (%d/%d) %v", 1, 250, tr)
	out := logs.String()
	require.NotContains(t, out, piiEmail)
	require.NotContains(t, out, piiIP)
	require.Contains(t, out, `"format":"%s - %v"`)
	require.Contains(t, out, errTest.Error())
	require.Contains(t, out, "400")
}

var errTest = &StatusError{Code: 500, Status: "500 Internal Server Error"}

func TestConfigValidate(t *testing.T) {
	good := Config{Tenant: "acme", WriteKey: "k", HashKey: config.Secret(testKey), Consumer: "c"}
	require.NoError(t, good.Validate())
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"bad tenant", func(c *Config) { c.Tenant = "a b" }, "tenant"},
		{"no write key", func(c *Config) { c.WriteKey = "" }, "write key is required"},
		{"bad endpoint", func(c *Config) { c.Endpoint = "ftp://x" }, "endpoint"},
		{"endpoint credentials redacted", func(c *Config) { c.Endpoint = "ftp://u:secretpw@x" }, "xxxxx"},
		{"batch too big", func(c *Config) { c.BatchSize = 3000 }, "batch size"},
		{"too many batches", func(c *Config) { c.BatchSize = 1; c.MaxInFlight = 5000 }, "concurrent Segment batches"},
		{"no hash key", func(c *Config) { c.HashKey = "" }, "hash key is required"},
		{"reclaim idle", func(c *Config) { c.ReclaimIdle = time.Millisecond }, "reclaim idle"},
		{"backoff", func(c *Config) { c.MinBackoff = time.Minute }, "backoff"},
		{"unknown type in the filter", func(c *Config) { c.Filter.Include = []string{"s", "login"} }, `filter include: "login" is not an Auth0 log type code`},
		{"unknown pii action", func(c *Config) { c.PII.Email = "mask" }, `pii policy for email "mask": want keep, hash or drop`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "secretpw")
		})
	}
	_, err := New(good, nil, Deps{})
	require.Error(t, err)
}

// TestMetricsSharedRegistry builds two tenants' forwarders on one registry,
// as package pipeline does: each on its tenant's registerer, the Segment
// request counters shared and without a tenant label. A second forwarder
// on one tenant's registerer is an error, not a panic.
func TestMetricsSharedRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	buf, err := buffer.NewRedis(testredis.Client(t), buffer.Config{Tenant: "x"}, buffer.Deps{})
	require.NoError(t, err)
	requests, err := NewRequests(reg)
	require.NoError(t, err)
	cfg := func(tenant string) Config {
		return Config{Tenant: tenant, WriteKey: "k", HashKey: config.Secret(testKey), Consumer: "c"}
	}
	for _, tenant := range []string{"a", "b"} {
		_, err := New(cfg(tenant), buf, Deps{Registerer: metrics.Tenant(reg, tenant), Requests: requests})
		require.NoError(t, err)
	}
	_, err = New(cfg("a"), buf, Deps{Registerer: metrics.Tenant(reg, "a"), Requests: requests})
	require.ErrorContains(t, err, "register forward metrics")
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() == "authpipe_forward_segment_requests_total" {
			for _, m := range mf.GetMetric() {
				require.Len(t, m.GetLabel(), 1, "code only: Segment is the application's, not a tenant's")
			}
		}
	}
	for _, tenant := range []string{"a", "b"} {
		require.Equal(t, 0.0, metricValue(t, reg, "authpipe_forward_events_acked_total", map[string]string{"tenant": tenant}))
		for _, reason := range filterReasons {
			require.Equal(t, 0.0, metricValue(t, reg, "authpipe_forward_events_filtered_total", map[string]string{"tenant": tenant, "reason": reason}))
		}
	}
	for _, code := range codeLabels {
		require.Equal(t, 0.0, metricValue(t, reg, "authpipe_forward_segment_requests_total", map[string]string{"code": code}))
	}
}

// MaxInFlight bounds what the forwarder holds — read from the buffer and not
// yet resolved, including a batch read ahead while the last one is mapped —
// however slow Segment answers.
func TestForwardMaxInFlight(t *testing.T) {
	fx := newFixture(t)
	logs := fx.generate(2000)
	fx.seg.SetDelay(50 * time.Millisecond)
	cfg := fx.config()
	cfg.MaxInFlight, cfg.ReadCount, cfg.BatchSize = 300, 200, 50
	fx.start(cfg)

	peak := int64(0)
	deadline := time.Now().Add(waitFor)
	for fx.seg.Count() < len(logs) {
		require.True(t, time.Now().Before(deadline), "Segment has %d of %d messages", fx.seg.Count(), len(logs))
		st := fx.stats()
		peak = max(peak, st.Pending)
		require.LessOrEqual(t, st.Pending, int64(cfg.MaxInFlight), "entries read and not acknowledged")
		time.Sleep(5 * time.Millisecond)
	}
	require.Greater(t, peak, int64(cfg.ReadCount), "reads went on while batches were in flight")
	fx.waitDrained()
	fx.requireDelivered(logs)
}

// TestConfigShowsNoSecret: the forwarder's config, printed or logged, shows
// the write key and the hash key as <secret>; they are revealed only to
// analytics-go and to the hashes.
func TestConfigShowsNoSecret(t *testing.T) {
	cfg := Config{Tenant: "acme", WriteKey: writeKey, HashKey: "hash-key-value-5678", Consumer: "c"}
	for _, out := range testlogs.Printed(cfg) {
		require.NotContains(t, out, writeKey)
		require.NotContains(t, out, "hash-key-value-5678")
		require.Equal(t, 2, strings.Count(out, "<secret>"), out)
	}
}
