package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

const (
	testIssuer   = "https://authpipe-test.eu.auth0.com/"
	testAudience = "https://authpipe.example.com/admin"
	staticToken  = "static-token-for-local-use-0123456789abcdef"
)

// syncBuffer is safe for a logger's concurrent writes.
type syncBuffer = testlogs.Buffer

// world is one admin API under test: a tenant's Redis buffer, the sim's
// JWKS over HTTP, the audit sink and stream, and the captured logs.
type world struct {
	t       *testing.T
	clock   *clockwork.FakeClock
	jwks    *sim.JWKS
	jwksSrv *httptest.Server
	reg     *prometheus.Registry
	rdb     redis.UniversalClient
	tenant  string
	buf     *buffer.Redis
	keys    audit.Keys
	stream  string
	trail   *audit.Trail
	sink    *syncBuffer
	logs    *syncBuffer
	api     *admin.API
	srv     *httptest.Server

	mu   sync.Mutex
	sent []string // every token sent
	wire bytes.Buffer
}

type worldOpts struct {
	cfg     admin.Config // Issuer, Audience, JWKSURL filled in when JWT is wanted
	noJWT   bool
	static  bool
	rules   admin.Rules
	backfil admin.Backfiller
	// logSink replaces the JSON-lines sink (default: w.sink).
	logSink audit.Sink
	// auditRetention of the Redis sink; default 720h.
	auditRetention time.Duration
}

func newWorld(t *testing.T, o worldOpts) *world {
	t.Helper()
	w := &world{t: t, clock: clockwork.NewFakeClockAt(time.Now().Truncate(time.Second)), sink: &syncBuffer{}, logs: &syncBuffer{}}
	w.jwks = sim.NewJWKS(sim.JWKSOptions{Issuer: testIssuer, Audience: testAudience, Clock: w.clock})
	w.jwksSrv = httptest.NewServer(w.jwks)
	t.Cleanup(w.jwksSrv.Close)

	w.reg = prometheus.NewPedanticRegistry()
	w.rdb = testredis.Client(t)
	w.tenant = strings.ToLower(testredis.Name(t))
	if len(w.tenant) > 64 {
		w.tenant = w.tenant[len(w.tenant)-64:]
	}
	var err error
	treg := metrics.Tenant(w.reg, w.tenant) // as package pipeline hands it out
	w.buf, err = buffer.NewRedis(w.rdb, buffer.Config{Tenant: w.tenant}, buffer.Deps{Registerer: treg, Clock: w.clock, Stages: metrics.NewStages(treg)})
	require.NoError(t, err)
	w.keys = audit.KeysFor("audit-" + w.tenant)
	w.stream = w.keys.Stream

	cfg := o.cfg
	if !o.noJWT {
		cfg.Issuer, cfg.Audience, cfg.JWKSURL = testIssuer, testAudience, w.jwksSrv.URL+sim.JWKSPath
	}
	if o.static {
		cfg.StaticToken = config.Secret(staticToken)
	}
	if cfg.Retention == 0 {
		cfg.Retention = 144 * time.Hour
	}
	logger := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	logSink := o.logSink
	if logSink == nil {
		logSink = audit.NewWriterSink(w.sink)
	}
	retention := o.auditRetention
	if retention == 0 {
		retention = 720 * time.Hour
	}
	w.trail, err = audit.NewTrail([]audit.Sink{logSink, audit.NewRedisSink(w.rdb, w.keys, retention, w.clock)},
		audit.Deps{Logger: logger, Registerer: w.reg, Clock: w.clock})
	require.NoError(t, err)
	w.api, err = admin.New(cfg, admin.Sources{
		Tenants:  []admin.Tenant{{Name: w.tenant, Buffer: w.buf}},
		Metrics:  w.reg,
		Rules:    o.rules,
		Backfill: o.backfil,
	}, admin.Deps{Logger: logger, Registerer: w.reg, Clock: w.clock, Trail: w.trail})
	require.NoError(t, err)
	w.srv = httptest.NewServer(admin.NewFront(http.NotFoundHandler(), w.api, admin.FrontConfig{}))
	t.Cleanup(w.srv.Close)
	t.Cleanup(w.checkNoTokenLeaked)
	return w
}

// response is one answered request.
type response struct {
	status int
	header http.Header
	body   string
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal([]byte(r.body), v), r.body)
}

// do sends a request with Authorization: Bearer token ("" for none).
func (w *world) do(method, path, token string, body any) response {
	w.t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return w.doAuth(method, path, []string{auth}, body)
}

// doAuth sends a request with the given Authorization header values ("" =
// none).
func (w *world) doAuth(method, path string, auth []string, body any) response {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			data, err := json.Marshal(b)
			require.NoError(w.t, err)
			rd = bytes.NewReader(data)
		}
	}
	req, err := http.NewRequestWithContext(w.t.Context(), method, w.srv.URL+path, rd)
	require.NoError(w.t, err)
	for _, a := range auth {
		if a != "" {
			req.Header.Add("Authorization", a)
			w.mu.Lock()
			w.sent = append(w.sent, a)
			if _, tok, ok := strings.Cut(a, " "); ok {
				w.sent = append(w.sent, strings.TrimSpace(tok))
			}
			w.mu.Unlock()
		}
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(w.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(w.t, err)
	w.mu.Lock()
	_ = resp.Header.Write(&w.wire)
	w.wire.Write(data)
	w.mu.Unlock()
	return response{status: resp.StatusCode, header: resp.Header, body: string(data)}
}

// audits returns the audit entries of the sink, oldest first.
func (w *world) audits() []map[string]any {
	w.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(w.sink.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(w.t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// requestOf returns the request entry (part 1) of a result entry.
func (w *world) requestOf(result map[string]any) map[string]any {
	w.t.Helper()
	for _, e := range w.audits() {
		if e["id"] == result["id"] && e["kind"] == audit.KindRequest && e["part"] == float64(1) {
			return e
		}
	}
	w.t.Fatalf("no request entry for %v", result)
	return nil
}

// requireChainsIntact verifies the chain of the file sink and the stream.
func (w *world) requireChainsIntact() {
	w.t.Helper()
	rep, err := audit.VerifyLines(strings.NewReader(w.sink.String()), "sink")
	require.NoError(w.t, err)
	require.True(w.t, rep.OK(), rep.String())
	rep, err = audit.VerifyRedis(w.t.Context(), w.rdb, w.keys)
	require.NoError(w.t, err)
	require.True(w.t, rep.OK(), rep.String())
}

func (w *world) lastAudit() map[string]any {
	w.t.Helper()
	a := w.audits()
	require.NotEmpty(w.t, a, "no audit entry")
	return a[len(a)-1]
}

// streamAudits returns the audit entries of the Redis stream.
func (w *world) streamAudits() []string {
	w.t.Helper()
	msgs, err := w.rdb.XRange(w.t.Context(), w.stream, "-", "+").Result()
	require.NoError(w.t, err)
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i], _ = m.Values["entry"].(string)
	}
	return out
}

// auditFields are the fields every entry carries.
var auditFields = []string{
	"seq", "prev", "id", "kind", "part", "parts", "time", "host", "remote_addr", "auth", "sub", "jti", "exp",
	"token_thumbprint", "claims_verified", "method", "path", "query", "operation", "resource",
	"outcome", "reason", "status", "latency_seconds",
}

func requireAuditFields(t *testing.T, e map[string]any) {
	t.Helper()
	for _, f := range auditFields {
		require.Contains(t, e, f, "audit entry lacks %s: %v", f, e)
	}
	ts, ok := e["time"].(string)
	require.True(t, ok)
	_, err := time.Parse(time.RFC3339Nano, ts)
	require.NoError(t, err)
	_, isNum := e["latency_seconds"].(float64)
	require.True(t, isNum)
	if e["kind"] == audit.KindRequest && e["status"] == nil {
		return // the request entry of a change: its result has the status
	}
	_, isNum = e["status"].(float64)
	require.True(t, isNum, "status of %v", e)
}

// checkNoTokenLeaked: no token sent, nor its signature or claims segment,
// appears in the audit sink, the audit stream, the logs or any response.
func (w *world) checkNoTokenLeaked() {
	t := w.t
	w.mu.Lock()
	sent := append([]string(nil), w.sent...)
	wire := w.wire.String()
	w.mu.Unlock()
	if len(sent) == 0 {
		return
	}
	var stream string
	if msgs, err := w.rdb.XRange(t.Context(), w.stream, "-", "+").Result(); err == nil {
		for _, m := range msgs {
			s, _ := m.Values["entry"].(string)
			stream += s + "\n"
		}
	}
	places := map[string]string{"audit sink": w.sink.String(), "audit stream": stream, "logs": w.logs.String(), "responses": wire}
	for _, tok := range sent {
		needles := []string{tok}
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			for _, p := range parts[1:] {
				if len(p) >= 16 {
					needles = append(needles, p)
				}
			}
		}
		for where, text := range places {
			for _, n := range needles {
				if len(n) < 8 {
					continue
				}
				if strings.Contains(text, n) {
					t.Errorf("%s contains a raw token (or part of one)", where)
				}
			}
		}
	}
}

// metricValue returns the value of the series of name with the given
// label pairs; it fails when there is no such series.
func metricValue(t *testing.T, w *world, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := w.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func counter(t *testing.T, w *world, op, outcome string) float64 {
	t.Helper()
	return metricValue(t, w, "authpipe_admin_requests_total", "operation", op, "outcome", outcome)
}
