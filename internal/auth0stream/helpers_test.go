package auth0stream_test

import (
	"bytes"
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// store is a real buffer as the tests inspect it.
type store interface {
	auth0stream.Buffer
	Checkpoint(ctx context.Context) (string, error)
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	Ack(ctx context.Context, group string, ids ...string) error
}

// backend opens a fresh buffer of one kind.
type backend struct {
	name string
	open func(t *testing.T, cfg buffer.Config) store
}

var backends = []backend{
	{"redis", func(t *testing.T, cfg buffer.Config) store {
		return openRedis(t, redisClient(t, testredis.Addr(t)), cfg)
	}},
	{"bolt", func(t *testing.T, cfg buffer.Config) store {
		cfg.Tenant = "acme"
		b, err := buffer.OpenBolt(t.TempDir(), cfg, buffer.Deps{})
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		return b
	}},
}

// redisClient is configured as authpipe run configures it: contexts bound
// commands.
func redisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func openRedis(t testing.TB, rdb redis.UniversalClient, cfg buffer.Config) *buffer.Redis {
	cfg.Tenant = testredis.Name(t)
	b, err := buffer.NewRedis(rdb, cfg, buffer.Deps{})
	require.NoError(t, err)
	return b
}

// fixture is a receiver over real HTTP with its tenants' real buffers.
type fixture struct {
	t       *testing.T
	recv    *auth0stream.Receiver
	srv     *httptest.Server
	reg     *prometheus.Registry
	clock   *clockwork.FakeClock
	auth0   *sim.Auth0
	mu      sync.Mutex
	commits []auth0stream.Commit
}

const token = "Bearer 4f1c9d2e-stream-token"

// newFixture serves a receiver of the tenants (name → buffer, token
// "<token> <name>" for all but the first, which has token).
func newFixture(t *testing.T, cfg auth0stream.Config, tenants ...auth0stream.Tenant) *fixture {
	t.Helper()
	f := &fixture{t: t, reg: prometheus.NewPedanticRegistry(), clock: clockwork.NewFakeClockAt(time.Now())}
	recv, err := auth0stream.New(labelled(f.reg, tenants), cfg, auth0stream.Deps{
		Registerer: tenantRegisterer(f.reg, ""), Clock: f.clock,
		OnCommit: func(c auth0stream.Commit) {
			f.mu.Lock()
			f.commits = append(f.commits, c)
			f.mu.Unlock()
		},
	})
	require.NoError(t, err)
	f.recv = recv
	f.srv = httptest.NewServer(recv)
	t.Cleanup(f.srv.Close)
	f.auth0 = sim.NewAuth0(sim.Auth0Options{})
	return f
}

// tenantRegisterer is name's registerer on reg, as the pipeline hands it
// out: the tenant label added by metrics.Tenant.
func tenantRegisterer(reg prometheus.Registerer, name string) prometheus.Registerer {
	return metrics.Tenant(reg, name)
}

// labelled gives each tenant its registerer on reg.
func labelled(reg prometheus.Registerer, tenants []auth0stream.Tenant) []auth0stream.Tenant {
	out := slices.Clone(tenants)
	for i := range out {
		out[i].Registerer = tenantRegisterer(reg, out[i].Name)
	}
	return out
}

// tenant is the one-tenant list of name with buffer b and token.
func tenant(name string, b auth0stream.Buffer) auth0stream.Tenant {
	return auth0stream.Tenant{Name: name, Token: token, Buffer: b}
}

// events adds n new events to the Auth0 simulator and returns them as its
// stream would push them.
func (f *fixture) events(n int) []sim.RawLog {
	f.t.Helper()
	evs := sim.GenerateEvents(rand.New(rand.NewPCG(uint64(n), 7)), n, time.Now().Add(-time.Hour), time.Second)
	var got []sim.RawLog
	for _, id := range f.auth0.Add(evs...) {
		raw, ok := f.auth0.Log(id)
		require.True(f.t, ok)
		got = append(got, sim.RawLog{ID: id, JSON: raw})
	}
	return got
}

// post sends body to path with the Authorization header auth ("" for
// none) and returns the status and the answer's body.
func (f *fixture) post(path, auth string, body []byte) (int, string) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), http.MethodPost, f.srv.URL+path, bytes.NewReader(body))
	require.NoError(f.t, err)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.srv.Client().Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return resp.StatusCode, string(msg)
}

// push posts logs in format to the single tenant's path with the token.
func (f *fixture) push(format sim.StreamFormat, logs []sim.RawLog) (int, string) {
	f.t.Helper()
	return f.post(auth0stream.PathPrefix, token, sim.StreamBody(format, logs))
}

func (f *fixture) lastCommit() auth0stream.Commit {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotEmpty(f.t, f.commits)
	return f.commits[len(f.commits)-1]
}

func (f *fixture) commitCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.commits)
}

// value returns the value of the series of metric name with exactly the
// labels given as name, value pairs.
func (f *fixture) value(name string, labels ...string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	require.NoError(f.t, err)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(want) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if want[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	f.t.Fatalf("no series %s%v", name, want)
	return 0
}

// requests is authpipe_stream_requests_total of one tenant and outcome.
func (f *fixture) requests(tenant, outcome string, code int) float64 {
	f.t.Helper()
	return f.value("authpipe_stream_requests_total", "tenant", tenant, "code", fmt.Sprint(code), "outcome", outcome)
}

// eventsCounted is authpipe_stream_events_total of one tenant and outcome.
func (f *fixture) eventsCounted(tenant, outcome string) float64 {
	f.t.Helper()
	return f.value("authpipe_stream_events_total", "tenant", tenant, "outcome", outcome)
}

// stored reads every entry of b's stream, through a group of its own that
// acknowledges them (so that it adds nothing to the backlog).
func stored(t *testing.T, b store) []buffer.Entry {
	t.Helper()
	ctx := t.Context()
	group := fmt.Sprintf("inspect-%d", time.Now().UnixNano())
	require.NoError(t, b.EnsureGroup(ctx, group))
	var all []buffer.Entry
	for {
		es, err := b.Read(ctx, group, "t", 1000, time.Millisecond)
		require.NoError(t, err)
		if len(es) == 0 {
			return all
		}
		all = append(all, es...)
		ids := make([]string, len(es))
		for i, e := range es {
			ids[i] = e.ID
		}
		require.NoError(t, b.Ack(ctx, group, ids...))
	}
}

// storedIDs returns the log_ids of b's stream, in stream order.
func storedIDs(t *testing.T, b store) []string {
	var ids []string
	for _, e := range stored(t, b) {
		ids = append(ids, e.LogID)
	}
	return ids
}

func ids(logs []sim.RawLog) []string {
	out := make([]string, len(logs))
	for i, l := range logs {
		out[i] = l.ID
	}
	return out
}

// decode turns pushed logs into the auth0log.Log the poller would append.
func decode(t *testing.T, logs []sim.RawLog) []auth0log.Log {
	out := make([]auth0log.Log, len(logs))
	for i, l := range logs {
		var err error
		out[i], err = auth0log.Decode(l.JSON)
		require.NoError(t, err)
	}
	return out
}

// requireNothingStored checks that none of logs is in b's dedupe record.
func requireNothingStored(t *testing.T, b store, logs []sim.RawLog) {
	t.Helper()
	seen, err := b.Seen(t.Context(), ids(logs))
	require.NoError(t, err)
	require.NotContains(t, seen, true, "a log of a refused request was stored")
	require.Empty(t, storedIDs(t, b))
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
