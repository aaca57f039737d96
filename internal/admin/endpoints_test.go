package admin_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

const rulesYAML = `rules:
  - name: FailedLoginsPerIP
    types: [f, fp]
    group_by: ip
    window: 5m
    threshold: 20
    every: 30s
    severity: warning
  - name: SignupBurst
    types: [ss]
    window: 1m
    threshold: 50
    every: 30s
    severity: critical
  - name: QuietRule
    types: [s]
    window: 1h
    threshold: 1000
    every: 1m
    severity: info
`

// fakeRules stands in for the threshold engine.
type fakeRules struct {
	mu      sync.Mutex
	rs      *rules.Set
	err     error
	reloads int
}

func (f *fakeRules) Rules() *rules.Set { f.mu.Lock(); defer f.mu.Unlock(); return f.rs }
func (f *fakeRules) Leader() bool      { return true }
func (f *fakeRules) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reloads++
	return f.err
}

func loadRules(t *testing.T) *rules.Set {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.yml")
	require.NoError(t, os.WriteFile(path, []byte(rulesYAML), 0o600))
	rs, err := rules.Load(path)
	require.NoError(t, err)
	return rs
}

// fakeBackfill is a Backfiller that runs one backfill at a time.
type fakeBackfill struct {
	mu      sync.Mutex
	running bool
	status  admin.BackfillStatus
}

func (f *fakeBackfill) Start(_ context.Context, since time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.running {
		return "", fmt.Errorf("start backfill: %w", admin.ErrBackfillRunning)
	}
	if since.Before(time.Now().Add(-144 * time.Hour)) {
		return "", fmt.Errorf("%w: since is older than the retention", admin.ErrBackfillInvalid)
	}
	f.running = true
	f.status = admin.BackfillStatus{ID: "bf-1", State: "running", Since: since.UTC()}
	return "bf-1", nil
}

func (f *fakeBackfill) Progress() admin.BackfillStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// deadLetters appends n logs to the world's buffer and dead-letters them.
func deadLetters(t *testing.T, b interface {
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	DeadLetter(ctx context.Context, group string, e buffer.Entry, reason string) error
	DeadLetters(ctx context.Context, count int) ([]buffer.DeadLetter, error)
}, n int) []buffer.DeadLetter {
	t.Helper()
	ctx := t.Context()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	logs := make([]auth0log.Log, n)
	for i := range logs {
		id := fmt.Sprintf("900%s%039d", at.Format("20060102150405"), i)
		raw := fmt.Sprintf(`{"log_id":%q,"type":"f","user_name":"person%d@example.com","ip":"203.0.113.%d"}`, id, i, i)
		logs[i] = auth0log.Log{ID: id, Date: at, Type: "f", Raw: json.RawMessage(raw)}
	}
	_, err := b.Append(ctx, logs, logs[n-1].ID)
	require.NoError(t, err)
	require.NoError(t, b.EnsureGroup(ctx, "forward"))
	es, err := b.Read(ctx, "forward", "c", n, -1)
	require.NoError(t, err)
	for _, e := range es {
		require.NoError(t, b.DeadLetter(ctx, "forward", e, buffer.Reason(buffer.ReasonSegmentRejected, "400 invalid")))
	}
	dls, err := b.DeadLetters(ctx, n+100)
	require.NoError(t, err)
	require.Equal(t, n, len(dls))
	return dls
}

// TestEndpoints: each endpoint with a token holding exactly its scope
// (and each refused without it), its answer, and its audit entry.
func TestEndpoints(t *testing.T) {
	rules := &fakeRules{rs: loadRules(t)}
	bf := &fakeBackfill{}
	w := newWorld(t, worldOpts{rules: rules, backfil: bf})
	dls := deadLetters(t, w.buf, 5)

	// Breach state comes from the registry, as /metrics shows it.
	f := promauto.With(w.reg)
	breached := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_breached", Help: "h"}, []string{"rule"})
	value := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_value", Help: "h"}, []string{"rule"})
	f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_rules_last_reload_successful", Help: "h"}).Set(1)
	breached.WithLabelValues("FailedLoginsPerIP").Set(1)
	value.WithLabelValues("FailedLoginsPerIP").Set(42)
	breached.WithLabelValues("SignupBurst").Set(1)
	value.WithLabelValues("SignupBurst").Set(77)
	breached.WithLabelValues("QuietRule").Set(0)
	value.WithLabelValues("QuietRule").Set(3)

	tok := func(scope string) string { return w.jwks.MintToken(sim.Claims{"scope": scope}) }
	sum := sha256.Sum256([]byte(rulesYAML))
	rulesDigest := hex.EncodeToString(sum[:])
	sinceOK := time.Now().Add(-time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	tests := []struct {
		name       string
		method     string
		path       string
		scope      string
		body       any
		wantStatus int
		resource   string
		op         string
		check      func(t *testing.T, r response, e map[string]any)
	}{
		{name: "status", method: "GET", path: "/api/v1/status", scope: admin.ScopeReadStatus, wantStatus: 200, resource: "status", op: admin.OpStatus,
			check: func(t *testing.T, r response, _ map[string]any) {
				var st admin.StatusResponse
				r.json(t, &st)
				require.True(t, st.Ready)
				require.Len(t, st.Tenants, 1)
				ts := st.Tenants[0]
				require.Equal(t, w.tenant, ts.Name)
				require.Equal(t, dls[4].LogID, ts.Checkpoint)
				require.NotNil(t, ts.CheckpointTime)
				require.InDelta(t, time.Hour.Seconds(), ts.CheckpointLagSeconds, 120)
				require.EqualValues(t, 144*3600, ts.RetentionSeconds)
				require.EqualValues(t, 5, ts.DeadLetters)
				require.EqualValues(t, 5, ts.StreamLength)
				require.EqualValues(t, 0, ts.Backlog)
				require.Empty(t, ts.Errors)
				require.NotNil(t, st.Rules)
				require.Equal(t, admin.RulesSummary{Loaded: 3, Breached: 2, ReloadOK: true, Leader: true}, *st.Rules)
			}},
		{name: "rules", method: "GET", path: "/api/v1/rules", scope: admin.ScopeReadRules, wantStatus: 200, resource: "rules", op: admin.OpRulesList,
			check: func(t *testing.T, r response, _ map[string]any) {
				var rr admin.RulesResponse
				r.json(t, &rr)
				require.True(t, rr.Enabled)
				require.Len(t, rr.Rules, 3)
				require.Equal(t, "FailedLoginsPerIP", rr.Rules[0].Name)
				require.Equal(t, []string{"f", "fp"}, rr.Rules[0].Types)
				require.Equal(t, "ip", rr.Rules[0].GroupBy)
				require.Equal(t, "5m0s", rr.Rules[0].Window)
				require.EqualValues(t, 20, rr.Rules[0].Threshold)
				require.True(t, rr.Rules[0].Breached)
				require.EqualValues(t, 42, rr.Rules[0].Value)
				require.False(t, rr.Rules[2].Breached)
			}},
		{name: "breaches", method: "GET", path: "/api/v1/breaches", scope: admin.ScopeReadRules, wantStatus: 200, resource: "rules/breaches", op: admin.OpBreaches,
			check: func(t *testing.T, r response, _ map[string]any) {
				var br admin.BreachesResponse
				r.json(t, &br)
				require.Len(t, br.Breaches, 2)
				require.Equal(t, "SignupBurst", br.Breaches[0].Name, "highest value first")
				require.Equal(t, "FailedLoginsPerIP", br.Breaches[1].Name)
			}},
		{name: "reload", method: "POST", path: "/api/v1/rules/reload", scope: admin.ScopeWriteRules, wantStatus: 200, resource: "rules", op: admin.OpRulesReload,
			check: func(t *testing.T, r response, e map[string]any) {
				require.JSONEq(t, `{"reloaded":true,"rules":3}`, r.body)
				require.Equal(t, 1, rules.reloads)
				files := []any{map[string]any{"path": rules.rs.Files[0], "sha256": rulesDigest}}
				require.Equal(t, files, e["rule_files"], "the files loaded")
				require.EqualValues(t, 3, e["affected"])
				require.Equal(t, files, w.requestOf(e)["rule_files"], "the files about to be read")
			}},
		{name: "dlq list without raw events", method: "GET", path: "/api/v1/dlq", scope: admin.ScopeReadDLQ, wantStatus: 200, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQList,
			check: func(t *testing.T, r response, _ map[string]any) {
				var d admin.DLQResponse
				r.json(t, &d)
				require.Len(t, d.DeadLetters, 5)
				require.Equal(t, "", d.Next)
				require.Equal(t, dls[0].ID, d.DeadLetters[0].ID)
				require.Equal(t, dls[0].LogID, d.DeadLetters[0].LogID)
				require.Equal(t, "segment_rejected: 400 invalid", d.DeadLetters[0].Reason)
				require.EqualValues(t, 1, d.DeadLetters[0].Deliveries)
				require.NotContains(t, r.body, "example.com", "no raw event unless asked")
				require.NotContains(t, r.body, `"raw"`)
			}},
		{name: "dlq list with raw events, paged", method: "GET", path: "/api/v1/dlq?raw=true&limit=2&after=" + dls[0].ID, scope: admin.ScopeReadDLQ, wantStatus: 200, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQList,
			check: func(t *testing.T, r response, e map[string]any) {
				var d admin.DLQResponse
				r.json(t, &d)
				require.Len(t, d.DeadLetters, 2)
				require.Equal(t, dls[1].ID, d.DeadLetters[0].ID)
				require.Equal(t, dls[2].ID, d.Next)
				require.JSONEq(t, string(dls[1].Raw), string(d.DeadLetters[0].Raw))
				// The entry names the dead letters returned, and the query.
				require.Equal(t, []any{
					map[string]any{"id": dls[1].ID, "log_id": dls[1].LogID},
					map[string]any{"id": dls[2].ID, "log_id": dls[2].LogID},
				}, e["records"])
				require.Equal(t, map[string]any{"raw": []any{"true"}, "limit": []any{"2"}, "after": []any{dls[0].ID}}, e["query"])
				require.Equal(t, []any{w.tenant}, e["tenants"])
				require.Equal(t, admin.OutcomeAllowed, e["outcome"])
			}},
		{name: "dlq list of an unknown tenant", method: "GET", path: "/api/v1/dlq?tenant=nobody", scope: admin.ScopeReadDLQ, wantStatus: 404, resource: "tenants/nobody/dlq", op: admin.OpDLQList},
		{name: "dlq list bad limit", method: "GET", path: "/api/v1/dlq?limit=0", scope: admin.ScopeReadDLQ, wantStatus: 400, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQList},
		{name: "dlq replay", method: "POST", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, body: admin.DLQRequest{IDs: []string{dls[0].ID, dls[1].ID}},
			wantStatus: 200, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay,
			check: func(t *testing.T, r response, e map[string]any) {
				require.JSONEq(t, `{"tenant":"`+w.tenant+`","replayed":2}`, r.body)
				require.Equal(t, audit.KindResult, e["kind"])
				require.EqualValues(t, 2, e["affected"])
				req := w.requestOf(e)
				require.Nil(t, req["status"], "written before the change: no status yet")
				require.Nil(t, req["affected"])
				require.Equal(t, []any{
					map[string]any{"id": dls[0].ID, "log_id": dls[0].LogID},
					map[string]any{"id": dls[1].ID, "log_id": dls[1].LogID},
				}, req["records"])
				es, err := w.buf.Read(t.Context(), "forward", "c", 10, -1)
				require.NoError(t, err)
				require.Equal(t, []string{dls[0].LogID, dls[1].LogID}, []string{es[0].LogID, es[1].LogID})
			}},
		{name: "dlq replay: both ids and all", method: "POST", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, body: `{"ids":["1-1"],"all":true}`, wantStatus: 400, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay},
		{name: "dlq replay: neither", method: "POST", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, body: `{}`, wantStatus: 400, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay},
		{name: "dlq replay: bad id", method: "POST", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, body: `{"ids":["12"]}`, wantStatus: 400, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay},
		{name: "dlq replay: unknown field", method: "POST", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, body: `{"idz":["1-1"]}`, wantStatus: 400, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay},
		{name: "dlq drop one", method: "POST", path: "/api/v1/dlq/drop", scope: admin.ScopeWriteDLQ, body: admin.DLQRequest{IDs: []string{dls[2].ID}},
			wantStatus: 200, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQDrop,
			check: func(t *testing.T, r response, e map[string]any) {
				require.JSONEq(t, `{"tenant":"`+w.tenant+`","dropped":1}`, r.body)
				require.EqualValues(t, 1, e["affected"])
				require.Equal(t, []any{map[string]any{"id": dls[2].ID, "log_id": dls[2].LogID}}, w.requestOf(e)["records"])
			}},
		{name: "dlq replay all", method: "POST", path: "/api/v1/dlq/replay?tenant=" + w.tenant, scope: admin.ScopeWriteDLQ, body: admin.DLQRequest{All: true},
			wantStatus: 200, resource: "tenants/" + w.tenant + "/dlq", op: admin.OpDLQReplay,
			check: func(t *testing.T, r response, e map[string]any) {
				require.JSONEq(t, `{"tenant":"`+w.tenant+`","replayed":2}`, r.body)
				// "all" is recorded as the dead letters it meant.
				require.Equal(t, []any{
					map[string]any{"id": dls[3].ID, "log_id": dls[3].LogID},
					map[string]any{"id": dls[4].ID, "log_id": dls[4].LogID},
				}, w.requestOf(e)["records"])
				left, err := w.buf.DeadLetters(t.Context(), 10)
				require.NoError(t, err)
				require.Empty(t, left)
			}},
		{name: "backfill progress", method: "GET", path: "/api/v1/backfill", scope: admin.ScopeReadBackfill, wantStatus: 200, resource: "backfill", op: admin.OpBackfillProgress},
		{name: "backfill since in the future", method: "POST", path: "/api/v1/backfill", scope: admin.ScopeWriteBackfill, body: map[string]string{"since": time.Now().Add(time.Hour).Format(time.RFC3339)},
			wantStatus: 400, resource: "backfill", op: admin.OpBackfillStart},
		{name: "backfill since not RFC 3339", method: "POST", path: "/api/v1/backfill", scope: admin.ScopeWriteBackfill, body: map[string]string{"since": "yesterday"},
			wantStatus: 400, resource: "backfill", op: admin.OpBackfillStart},
		{name: "backfill since past the retention", method: "POST", path: "/api/v1/backfill", scope: admin.ScopeWriteBackfill, body: map[string]string{"since": time.Now().Add(-200 * time.Hour).Format(time.RFC3339)},
			wantStatus: 400, resource: "backfill", op: admin.OpBackfillStart},
		{name: "backfill start", method: "POST", path: "/api/v1/backfill", scope: admin.ScopeWriteBackfill, body: map[string]string{"since": sinceOK},
			wantStatus: 202, resource: "backfill", op: admin.OpBackfillStart,
			check: func(t *testing.T, r response, e map[string]any) {
				var st admin.BackfillStatus
				r.json(t, &st)
				require.Equal(t, "bf-1", st.ID)
				require.Equal(t, "running", st.State)
				require.Equal(t, "bf-1", e["backfill_id"])
				req := w.requestOf(e)
				require.Equal(t, map[string]any{"since": sinceOK, "until": nil}, req["window"])
				require.Equal(t, []any{w.tenant}, req["tenants"])
			}},
		{name: "backfill start while running", method: "POST", path: "/api/v1/backfill", scope: admin.ScopeWriteBackfill, body: map[string]string{"since": sinceOK},
			wantStatus: 409, resource: "backfill", op: admin.OpBackfillStart},
		{name: "unknown path", method: "GET", path: "/api/v1/secrets", scope: admin.ScopeReadStatus, wantStatus: 404, resource: "/api/v1/secrets", op: admin.OpUnknown},
		{name: "outside the version", method: "GET", path: "/api/v2/dlq", scope: admin.ScopeReadDLQ, wantStatus: 404, resource: "/api/v2/dlq", op: admin.OpUnknown},
		{name: "the prefix alone", method: "GET", path: "/api/v1", scope: admin.ScopeReadDLQ, wantStatus: 404, resource: "/api/v1", op: admin.OpUnknown},
		{name: "wrong method", method: "GET", path: "/api/v1/dlq/replay", scope: admin.ScopeWriteDLQ, wantStatus: 405, resource: "/api/v1/dlq/replay", op: admin.OpUnknown,
			check: func(t *testing.T, r response, _ map[string]any) { require.Equal(t, "POST", r.header.Get("Allow")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.op != admin.OpUnknown {
				// Every scope but the one it needs: 403, nothing done.
				var others []string
				for _, s := range admin.AllScopes {
					if s != tt.scope {
						others = append(others, s)
					}
				}
				resp := w.do(tt.method, tt.path, tok(strings.Join(others, " ")), tt.body)
				require.Equal(t, 403, resp.status, resp.body)
				e := w.lastAudit()
				requireAuditFields(t, e)
				require.Equal(t, admin.OutcomeDenied, e["outcome"])
				require.Equal(t, tt.op, e["operation"])
				require.Equal(t, tt.resource, e["resource"])
				require.Nil(t, e["affected"])
			}

			resp := w.do(tt.method, tt.path, tok(tt.scope), tt.body)
			require.Equal(t, tt.wantStatus, resp.status, resp.body)
			e := w.lastAudit()
			requireAuditFields(t, e)
			require.Equal(t, tt.method, e["method"])
			require.Equal(t, tt.op, e["operation"])
			require.Equal(t, tt.resource, e["resource"])
			require.EqualValues(t, tt.wantStatus, e["status"])
			if tt.op == admin.OpUnknown {
				require.Equal(t, admin.OutcomeDenied, e["outcome"])
			} else {
				require.Equal(t, admin.OutcomeAllowed, e["outcome"])
				require.Equal(t, "", e["reason"])
			}
			if tt.check != nil {
				tt.check(t, resp, e)
			}
		})
	}
	require.NotContains(t, w.sink.String(), "example.com", "no raw event in the audit")
	require.NotContains(t, w.logs.String(), "example.com", "no raw event in the logs")
}

// TestNotConfigured: without a threshold engine and a backfiller the
// endpoints say so; a failing reload keeps the answer informative.
func TestNotConfigured(t *testing.T) {
	w := newWorld(t, worldOpts{})
	tok := w.jwks.MintToken(sim.Claims{"scope": strings.Join(admin.AllScopes, " ")})
	tests := []struct {
		method, path string
		body         any
		want         int
		code         string
	}{
		{"POST", "/api/v1/backfill", map[string]string{"since": "2026-01-01T00:00:00Z"}, 501, "not_implemented"},
		{"GET", "/api/v1/backfill", nil, 501, "not_implemented"},
		{"POST", "/api/v1/rules/reload", nil, 409, "rules_off"},
	}
	for _, tt := range tests {
		resp := w.do(tt.method, tt.path, tok, tt.body)
		require.Equal(t, tt.want, resp.status, resp.body)
		var body struct{ Error, Code string }
		resp.json(t, &body)
		require.Equal(t, tt.code, body.Code)
		require.NotEmpty(t, body.Error)
		require.Equal(t, admin.OutcomeAllowed, w.lastAudit()["outcome"])
	}
	resp := w.do("GET", "/api/v1/rules", tok, nil)
	require.Equal(t, 200, resp.status)
	require.JSONEq(t, `{"enabled":false,"leader":false,"reload_ok":false,"files":[],"rules":[]}`, resp.body)

	rules := &fakeRules{rs: loadRules(t), err: errors.New("rules.yml:3: threshold: must be more than 0")}
	w2 := newWorld(t, worldOpts{rules: rules})
	resp = w2.do("POST", "/api/v1/rules/reload", w2.jwks.MintToken(sim.Claims{"scope": admin.ScopeWriteRules}), nil)
	require.Equal(t, 422, resp.status)
	require.Contains(t, resp.body, "rules.yml:3: threshold: must be more than 0; the previous rules stay in force")
}

// TestMetricsAtStart: every operation × outcome series exists at 0 before
// the first request, and the registry passes the linter.
func TestMetricsAtStart(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	for _, op := range admin.Operations() {
		for _, o := range admin.Outcomes {
			require.Zero(t, counter(t, w, op, o), "%s %s", op, o)
		}
	}
	for _, sink := range []string{audit.LogSinkName, audit.RedisSinkName} {
		require.Zero(t, metricValue(t, w, "authpipe_admin_audit_errors_total", "sink", sink))
		require.Zero(t, metricValue(t, w, "authpipe_admin_audit_pending_entries", "sink", sink))
		require.Zero(t, metricValue(t, w, "authpipe_admin_audit_dropped_total", "sink", sink))
	}
	require.Zero(t, metricValue(t, w, "authpipe_admin_jwks_refreshes_total", "result", "success"))
	problems, err := testutil.GatherAndLint(w.reg)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestConcurrentRequests: the audit takes concurrent requests whole, one
// line each, on one chain per sink.
func TestConcurrentRequests(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := staticToken
			if i%2 == 1 {
				tok = "wrong-token"
			}
			w.do("GET", "/api/v1/status", tok, nil)
		}()
	}
	wg.Wait()
	entries := w.audits()
	require.Len(t, entries, 20)
	for _, e := range entries {
		requireAuditFields(t, e)
	}
	require.Len(t, w.streamAudits(), 20)
	require.EqualValues(t, 10, counter(t, w, admin.OpStatus, admin.OutcomeAllowed))
	require.EqualValues(t, 10, counter(t, w, admin.OpStatus, admin.OutcomeDenied))
	w.requireChainsIntact()
}

// TestAuditRetention: the audit stream keeps the retention's worth of
// entries, by the injected clock, records where its chain now starts, and
// takes entries when the clock is behind.
func TestAuditRetention(t *testing.T) {
	w := newWorld(t, worldOpts{static: true, auditRetention: time.Hour})
	w.do("GET", "/api/v1/status", staticToken, nil)
	w.clock.Advance(30 * time.Minute)
	w.do("GET", "/api/v1/status", staticToken, nil)
	require.Len(t, w.streamAudits(), 2)
	w.clock.Advance(45 * time.Minute)
	w.do("GET", "/api/v1/status", staticToken, nil)
	got := w.streamAudits()
	require.Len(t, got, 2, "the first entry is past the retention")
	sink := w.audits()
	require.Len(t, sink, 3, "the file keeps everything")
	require.Equal(t, sink[1]["id"], decode(t, got[0])["id"])
	require.Equal(t, sink[2]["id"], decode(t, got[1])["id"])
	rep, err := audit.VerifyRedis(t.Context(), w.rdb, w.keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.False(t, rep.Genesis, "the head was trimmed")

	w.clock.Advance(-2 * time.Hour)
	w.do("GET", "/api/v1/status", staticToken, nil)
	require.Len(t, w.streamAudits(), 3, "a clock behind the stream still appends")
	require.Zero(t, metricValue(t, w, "authpipe_admin_audit_errors_total", "sink", "redis"))
	w.requireChainsIntact()
}

// TestAuditSinkFailure: one failing sink is counted and logged; the other
// takes the entry, so the request is served; the failing sink gets the
// entry, in order, once it works again.
func TestAuditSinkFailure(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	require.NoError(t, w.rdb.Set(t.Context(), w.stream, "not a stream", 0).Err())
	resp := w.do("GET", "/api/v1/status", staticToken, nil)
	require.Equal(t, 200, resp.status)
	require.EqualValues(t, 1, metricValue(t, w, "authpipe_admin_audit_errors_total", "sink", "redis"))
	require.EqualValues(t, 1, metricValue(t, w, "authpipe_admin_audit_pending_entries", "sink", "redis"))
	require.Contains(t, w.logs.String(), "write audit entry")
	require.Len(t, w.audits(), 1, "the file has it")

	require.NoError(t, w.rdb.Del(t.Context(), w.stream).Err())
	w.do("GET", "/api/v1/rules", staticToken, nil)
	stream := w.streamAudits()
	require.Len(t, stream, 2)
	require.Equal(t, admin.OpStatus, decode(t, stream[0])["operation"], "the kept entry first")
	require.Equal(t, admin.OpRulesList, decode(t, stream[1])["operation"])
	require.Zero(t, metricValue(t, w, "authpipe_admin_audit_pending_entries", "sink", "redis"))
	require.Contains(t, w.logs.String(), "write audit entry: recovered")
}

// TestFailClosed is the fail-open reproduction: the audit file on
// /dev/full and the Redis audit key replaced by a string. A raw dead-letter
// read and a drop of every dead letter are refused with 503: no data is
// shown, every dead letter stays. Once a sink is back the refusals are
// recorded, before the next request's entry.
func TestFailClosed(t *testing.T) {
	full, err := audit.NewFileSink("/dev/full")
	require.NoError(t, err)
	w := newWorld(t, worldOpts{static: true, logSink: full})
	dls := deadLetters(t, w.buf, 3)
	require.NoError(t, w.rdb.Set(t.Context(), w.stream, "not a stream", 0).Err())

	resp := w.do("GET", "/api/v1/dlq?raw=true", staticToken, nil)
	require.Equal(t, 503, resp.status, resp.body)
	require.Equal(t, "30", resp.header.Get("Retry-After"))
	require.JSONEq(t, `{"error":"the audit trail cannot be written, so nothing was done or shown; try again later","code":"audit_unavailable"}`, resp.body)
	for _, d := range dls {
		require.NotContains(t, resp.body, d.ID)
	}
	require.NotContains(t, resp.body, "example.com")

	resp = w.do("POST", "/api/v1/dlq/drop", staticToken, admin.DLQRequest{All: true})
	require.Equal(t, 503, resp.status, resp.body)
	left, err := w.buf.DeadLetters(t.Context(), 10)
	require.NoError(t, err)
	require.Len(t, left, 3, "every dead letter is kept")

	// Denials too: nothing is answered but 503 while nothing is recorded.
	resp = w.do("GET", "/api/v1/status", "wrong-token", nil)
	require.Equal(t, 503, resp.status)
	require.Empty(t, resp.header.Get("WWW-Authenticate"))

	require.EqualValues(t, 1, counter(t, w, admin.OpDLQList, admin.OutcomeRefused))
	require.EqualValues(t, 1, counter(t, w, admin.OpDLQDrop, admin.OutcomeRefused))
	require.EqualValues(t, 1, counter(t, w, admin.OpStatus, admin.OutcomeRefused))
	require.Zero(t, counter(t, w, admin.OpDLQDrop, admin.OutcomeAllowed))
	require.GreaterOrEqual(t, metricValue(t, w, "authpipe_admin_audit_errors_total", "sink", "log"), 3.0)
	require.EqualValues(t, 3, metricValue(t, w, "authpipe_admin_audit_pending_entries", "sink", "redis"))
	require.Equal(t, "string", w.rdb.Type(t.Context(), w.stream).Val(), "nothing was written")

	// Redis is back: the refusals appear first, then the next request.
	require.NoError(t, w.rdb.Del(t.Context(), w.stream).Err())
	resp = w.do("GET", "/api/v1/dlq", staticToken, nil)
	require.Equal(t, 200, resp.status, resp.body)
	stream := w.streamAudits()
	require.Len(t, stream, 4)
	for i, op := range []string{admin.OpDLQList, admin.OpDLQDrop, admin.OpStatus} {
		e := decode(t, stream[i])
		requireAuditFields(t, e)
		require.Equal(t, op, e["operation"])
		require.Equal(t, admin.OutcomeRefused, e["outcome"])
		require.Equal(t, admin.ReasonAuditUnavailable, e["reason"])
		require.EqualValues(t, 503, e["status"])
		require.Nil(t, e["records"], "nothing was shown or changed")
	}
	require.Equal(t, map[string]any{"raw": []any{"true"}}, decode(t, stream[0])["query"])
	last := decode(t, stream[3])
	require.Equal(t, admin.OutcomeAllowed, last["outcome"])
	require.Len(t, last["records"], 3, "the read names the dead letters it returned")
	rep, err := audit.VerifyRedis(t.Context(), w.rdb, w.keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
}

// TestLongListsRecordedWhole: a drop of 600 ids is recorded with every id
// and log_id, over linked entries; ids that are not dead letters are named
// as missing.
func TestLongListsRecordedWhole(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	dls := deadLetters(t, w.buf, 600)
	ids := []string{"1-1"}
	for _, d := range dls {
		ids = append(ids, d.ID)
	}
	resp := w.do("POST", "/api/v1/dlq/drop", staticToken, admin.DLQRequest{IDs: ids})
	require.Equal(t, 200, resp.status, resp.body)
	require.JSONEq(t, `{"tenant":"`+w.tenant+`","dropped":600}`, resp.body)
	entries := w.audits()
	require.Len(t, entries, 4, "three parts, then the result")
	recorded := map[string]string{}
	for i, e := range entries[:3] {
		require.Equal(t, entries[0]["id"], e["id"])
		require.EqualValues(t, i+1, e["part"])
		require.EqualValues(t, 3, e["parts"])
		for _, r := range e["records"].([]any) {
			rec := r.(map[string]any)
			recorded[rec["id"].(string)] = rec["log_id"].(string)
		}
	}
	require.Equal(t, []any{"1-1"}, entries[0]["missing"])
	require.Len(t, recorded, 600)
	for _, d := range dls {
		require.Equal(t, d.LogID, recorded[d.ID])
	}
	require.Equal(t, audit.KindResult, entries[3]["kind"])
	require.Equal(t, entries[0]["id"], entries[3]["id"])
	require.EqualValues(t, 600, entries[3]["affected"])
}

// TestEmbeddedBuffer: the API over the embedded buffer (no Redis): status
// and dead letters work, the audit goes to the log sink only.
func TestEmbeddedBuffer(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(reg, "acme")
	b, err := buffer.OpenBolt(t.TempDir(), buffer.Config{Tenant: "acme"}, buffer.Deps{Registerer: treg, Stages: metrics.NewStages(treg)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	dls := deadLetters(t, b, 3)
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	sink, err := audit.NewFileSink(path)
	require.NoError(t, err)
	trail, err := audit.NewTrail([]audit.Sink{sink}, audit.Deps{Registerer: reg})
	require.NoError(t, err)
	api, err := admin.New(admin.Config{StaticToken: staticToken}, admin.Sources{
		Tenants: []admin.Tenant{{Name: "acme", Buffer: b}}, Metrics: reg,
	}, admin.Deps{Registerer: reg, Trail: trail})
	require.NoError(t, err)

	call := func(method, path, body string) *http.Response {
		req, err := http.NewRequest(method, "http://authpipe"+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+staticToken)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Result()
	}
	resp := call("GET", "/api/v1/status", "")
	require.Equal(t, 200, resp.StatusCode)
	var st admin.StatusResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	require.EqualValues(t, 3, st.Tenants[0].DeadLetters)
	require.Nil(t, st.Rules)

	resp = call("POST", "/api/v1/dlq/replay", `{"ids":["`+dls[1].ID+`"]}`)
	require.Equal(t, 200, resp.StatusCode)
	resp = call("POST", "/api/v1/dlq/drop", `{"all":true}`)
	require.Equal(t, 200, resp.StatusCode)
	left, err := b.DeadLetters(t.Context(), 10)
	require.NoError(t, err)
	require.Empty(t, left)
	rep, err := audit.VerifyFile(path)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 5, rep.Entries, "status; replay and drop, each a request and a result")
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  admin.Config
		want string
	}{
		{"nothing", admin.Config{}, "set an audience (JWT mode) or a static token"},
		{"jwt without issuer", admin.Config{Audience: "a", JWKSURL: "https://x/.well-known/jwks.json"}, "needs the issuer"},
		{"jwt without jwks", admin.Config{Audience: "a", Issuer: "https://x/"}, "needs an http(s) JWKS URL"},
		{"jwks not http", admin.Config{Audience: "a", Issuer: "https://x/", JWKSURL: "file:///etc/keys"}, "needs an http(s) JWKS URL"},
		{"short static token", admin.Config{StaticToken: "short"}, "at least 32 characters"},
		{"negative leeway", admin.Config{StaticToken: staticToken, Leeway: -time.Second}, "must not be negative"},
		{"long leeway", admin.Config{StaticToken: staticToken, Leeway: time.Hour}, "at most 5m"},
		{"static only", admin.Config{StaticToken: staticToken}, ""},
		{"jwt", admin.Config{Audience: "a", Issuer: "https://x/", JWKSURL: "https://x/.well-known/jwks.json"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), staticToken)
		})
	}
}

// TestTokenInURL: a token pasted into the path or a query parameter
// reaches neither the audit trail (file and stream) nor the log: the
// 64-character static token of `openssl rand -hex 32`, a JWT, and a
// configured secret of any length.
func TestTokenInURL(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	// Not a configured secret: masked for its length alone (32+).
	other := strings.Repeat("fedcba98", 4)
	w := newWorld(t, worldOpts{cfg: admin.Config{StaticToken: config.Secret(hex64), Secrets: []config.Secret{"tiny-secret"}}})
	jwt := w.jwks.MintToken(sim.Claims{"scope": admin.ScopeReadDLQ})
	w.mu.Lock()
	w.sent = append(w.sent, jwt, hex64, other)
	w.mu.Unlock()
	paths := []struct{ path, resource string }{
		{"/api/v1/" + other, "/api/v1/<masked>"},
		{"/api/v1/dlq?tenant=" + other, "tenants/<masked>/dlq"},
		{"/api/v1/" + hex64, "/api/v1/<masked>"},
		{"/api/v1/" + jwt, "/api/v1/<masked>"},
		{"/api/v1/dlq?tenant=" + hex64, "tenants/<masked>/dlq"},
		{"/api/v1/dlq?after=" + hex64 + "&" + hex64 + "=1", "tenants/" + w.tenant + "/dlq"},
		{"/api/v1/tiny-secret", "/api/v1/<masked>"},
		{"/api/v1//" + hex64, "/api/v1//<masked>"},
	}
	for _, p := range paths {
		resp := w.do("GET", p.path, hex64, nil)
		require.Contains(t, []int{400, 404}, resp.status, p.path)
		e := w.lastAudit()
		require.Equal(t, p.resource, e["resource"], p.path)
		require.NotContains(t, fmt.Sprint(e), "tiny-secret")
		if strings.Contains(p.path, "after=") {
			require.Equal(t, map[string]any{"after": []any{"<masked>"}, "<masked>": []any{"1"}}, e["query"])
		}
	}
	for where, text := range map[string]string{"file": w.sink.String(), "stream": strings.Join(w.streamAudits(), "\n"), "log": w.logs.String()} {
		require.NotContains(t, text, hex64, where)
		require.NotContains(t, text, jwt, where)
		require.NotContains(t, text, other, where)
		require.NotContains(t, text, "tiny-secret", where)
	}
}

// TestJWKSURLCredentials: a JWKS URL with user:password@ is used with its
// credentials but never logged with them.
func TestJWKSURLCredentials(t *testing.T) {
	w := newWorld(t, worldOpts{})
	u := strings.Replace(w.jwksSrv.URL, "http://", "http://operator:jwks-pa55word-do-not-log@", 1) + "/missing/jwks.json"
	cfg := admin.Config{Issuer: testIssuer, Audience: testAudience, JWKSURL: u}
	logs := &syncBuffer{}
	trail, err := audit.NewTrail([]audit.Sink{audit.NewWriterSink(io.Discard)}, audit.Deps{})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	api, err := admin.New(cfg, admin.Sources{Tenants: []admin.Tenant{{Name: w.tenant, Buffer: w.buf}}, Metrics: reg},
		admin.Deps{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Registerer: reg, Trail: trail})
	require.NoError(t, err)
	req := httptest.NewRequest("GET", "/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+w.jwks.MintToken(sim.Claims{"scope": admin.ScopeReadStatus}))
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	require.Equal(t, 503, rec.Code, "no key could be fetched")
	require.Contains(t, logs.String(), "fetch admin API signing keys")
	require.Contains(t, logs.String(), "/missing/jwks.json", "the URL is named")
	require.NotContains(t, logs.String(), "jwks-pa55word-do-not-log")
	require.NotContains(t, logs.String(), "operator:")
}

func decode(t *testing.T, line string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(line), &m), line)
	return m
}
