package auth0poll

import (
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

const (
	testClientID = "poller-test-client"
	testSecret   = "s3cr3t-Do-Not-Log-9f2bQ"
	testInterval = 10 * time.Second
	driveStep    = time.Second
	driveTimeout = 40 * time.Second
)

// harness is one test's world: the Auth0 simulator over real HTTP on a fake
// clock, the real Redis buffer, and what the pollers log.
type harness struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	auth0  *sim.Auth0
	srv    *httptest.Server
	rdb    *redis.Client
	buf    *buffer.Redis
	tenant string
	rng    *rand.Rand
	t0     time.Time     // the fake clock's start
	step   time.Duration // drive's clock step; default driveStep

	mu    sync.Mutex
	froms []string // `from` of every logs request that reached the wire
	logs  syncBuffer
}

type harnessOpts struct {
	simRetention time.Duration                   // default 144h
	maxEvents    int64                           // buffer back-pressure bound
	rdb          *redis.Client                   // default: the shared test server
	wrap         func(http.Handler) http.Handler // between the wire and the simulator
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	// The buffer runs on the real clock: start the fake one at real time.
	clock := clockwork.NewFakeClockAt(time.Now().UTC().Truncate(time.Second))
	h := &harness{
		t:      t,
		clock:  clock,
		auth0:  sim.NewAuth0(sim.Auth0Options{ClientID: testClientID, ClientSecret: testSecret, Retention: o.simRetention, Clock: clock}),
		rdb:    o.rdb,
		tenant: testredis.Name(t),
		rng:    rand.New(rand.NewPCG(1, uint64(len(t.Name())))),
		t0:     clock.Now(),
	}
	if h.rdb == nil {
		h.rdb = testredis.Client(t)
	}
	var handler http.Handler = h.auth0
	if o.wrap != nil {
		handler = o.wrap(handler)
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v2/logs" {
			h.mu.Lock()
			h.froms = append(h.froms, r.URL.Query().Get("from"))
			h.mu.Unlock()
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(h.srv.Close)
	var err error
	h.buf, err = buffer.NewRedis(h.rdb, buffer.Config{Tenant: h.tenant, MaxEvents: o.maxEvents}, buffer.Deps{})
	require.NoError(t, err)
	t.Cleanup(func() {
		keys, _ := h.rdb.Keys(context.Background(), "authpipe:{"+h.tenant+"}:*").Result()
		if len(keys) > 0 {
			h.rdb.Del(context.Background(), keys...)
		}
	})
	return h
}

func (h *harness) config() Config {
	return Config{
		Tenant:         h.tenant,
		Domain:         h.srv.URL, // http://127.0.0.1:port: plain HTTP to the simulator
		ClientID:       testClientID,
		ClientSecret:   testSecret,
		PollInterval:   testInterval,
		RequestTimeout: 10 * time.Second,
		MaxBackoff:     8 * time.Second,
	}
}

// newPoller builds a poller on its own registry.
func (h *harness) newPoller(mod func(*Config)) (*Poller, *prometheus.Registry) {
	h.t.Helper()
	cfg := h.config()
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(reg, cfg.Tenant) // as package pipeline hands it out
	p, err := New(cfg, h.buf, Deps{
		Logger:     h.logger(),
		Registerer: treg,
		Clock:      h.clock,
		Stages:     metrics.NewStages(treg),
	})
	require.NoError(h.t, err)
	return p, reg
}

func (h *harness) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// run starts p.Run; the returned stop cancels it and checks it returned nil.
func (h *harness) run(p *Poller) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(h.t, err, "Run after cancel")
			case <-time.After(15 * time.Second):
				h.t.Fatal("Run did not return after cancel")
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// idle waits until the poller sleeps on the clock: between requests, so
// none is in flight (a stopped poller leaves no request behind that the
// server could still answer after the test moved on).
func (h *harness) idle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), driveTimeout)
	defer cancel()
	require.NoError(h.t, h.clock.BlockUntilContext(ctx, 1), "poller never went idle")
}

// drive advances the fake clock whenever something waits on it, until cond
// holds. Time stands still while the poller works, so a test sees exactly
// the waits the poller chose.
func (h *harness) drive(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(driveTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s (fake clock advanced %s)", what, h.clock.Since(h.t0))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := h.clock.BlockUntilContext(ctx, 1)
		cancel()
		if err == nil {
			h.clock.Advance(cmp.Or(h.step, driveStep))
		}
	}
}

// streamIDs returns the log_ids in the buffer's stream, in stream order.
func (h *harness) streamIDs() []string {
	h.t.Helper()
	msgs, err := h.rdb.XRange(context.Background(), h.buf.StreamKey(), "-", "+").Result()
	require.NoError(h.t, err)
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i], _ = m.Values["id"].(string)
	}
	return ids
}

func (h *harness) streamLen() int {
	n, err := h.rdb.XLen(context.Background(), h.buf.StreamKey()).Result()
	require.NoError(h.t, err)
	return int(n)
}

func (h *harness) checkpoint() string {
	cp, err := h.buf.Checkpoint(context.Background())
	require.NoError(h.t, err)
	return cp
}

func (h *harness) requestedFroms() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.froms...)
}

// addEvents adds n generated events dated from start, spacing apart.
func (h *harness) addEvents(n int, start time.Time, spacing time.Duration) []string {
	return h.auth0.Add(sim.GenerateEvents(h.rng, n, start, spacing)...)
}

// drainBucket empties the simulator's rate-limit bucket as another client
// of the tenant would, bypassing the wire; it returns the 429s and the
// injected 5xx it drew.
func (h *harness) drainBucket() (n429, n5xx int) {
	h.t.Helper()
	form := url.Values{
		"grant_type": {"client_credentials"}, "client_id": {testClientID},
		"client_secret": {testSecret}, "audience": {"http://example.com/api/v2/"},
	}
	req := httptest.NewRequest(http.MethodPost, "http://example.com/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.auth0.ServeHTTP(rec, req)
	require.Equal(h.t, http.StatusOK, rec.Code, rec.Body.String())
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(h.t, json.Unmarshal(rec.Body.Bytes(), &tok))
	for range 1000 {
		req := httptest.NewRequest(http.MethodGet, "http://example.com/api/v2/logs?take=1&from="+strings.Repeat("9", 56), nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		rec := httptest.NewRecorder()
		h.auth0.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusTooManyRequests:
			return 1, n5xx
		case http.StatusInternalServerError:
			n5xx++
		default:
			require.Equal(h.t, http.StatusOK, rec.Code)
		}
	}
	h.t.Fatal("rate-limit bucket never emptied")
	return 0, 0
}

func polled(p *Poller) float64 { return testutil.ToFloat64(p.m.polled) }

// logText returns everything the pollers logged so far.
func (h *harness) logText() string { return h.logs.String() }

// logRecords returns the logged records with the given message.
func (h *harness) logRecords(msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(h.logText(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		require.NoError(h.t, json.Unmarshal([]byte(line), &rec))
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// syncBuffer is safe for a logger's concurrent writes.
type syncBuffer = testlogs.Buffer
