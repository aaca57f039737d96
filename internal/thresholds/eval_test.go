package thresholds

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// captured collects sent alerts.
type captured struct{ alerts []notify.Alert }

func (c *captured) Notify(a []notify.Alert) { c.alerts = append(c.alerts, a...) }

// newTestEvaluator is an evaluator on a store.Memory with a fake clock.
func newTestEvaluator(t *testing.T, src string, clock clockwork.Clock) (*evaluator, *captured) {
	out := &captured{}
	ev := &evaluator{
		tenant: "acme", st: store.NewMemory(), clock: clock, log: slog.New(slog.DiscardHandler),
		m: newEngineMetrics(prometheus.NewRegistry()), out: out, leader: func() bool { return true },
		maxGroups: 100, maxAlerts: 2, top: 3, maxCand: 200, resend: time.Minute, realtime: true,
	}
	ev.rules.Store(thtest.Rules(t, src))
	return ev, out
}

func countAt(t *testing.T, ev *evaluator, typ, ip, user string, n int) {
	t.Helper()
	var evs []store.Event
	for range n {
		evs = append(evs, store.Event{ID: fmt.Sprintf("e%d", thtest.Seq()),
			Date: ev.clock.Now(), Type: typ, Fields: [5]string{ip, "", user}})
	}
	require.NoError(t, ev.countEvents(context.Background(), evs, nil))
}

// At most MaxAlertsPerRule groups fire; the rest show in top_offenders.
func TestMaxAlertsPerRule(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	ev, out := newTestEvaluator(t, `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 5m
    threshold: 2
`, clock)
	ev.realtime = false
	countAt(t, ev, "fp", "10.0.0.1", "u", 5)
	countAt(t, ev, "fp", "10.0.0.2", "u", 4)
	countAt(t, ev, "fp", "10.0.0.3", "u", 3)
	r, _ := ev.rules.Load().Get("PerIP")
	res, err := ev.check(context.Background(), r, clock.Now())
	require.NoError(t, err)
	require.Equal(t, 5.0, res.Value)
	require.Len(t, res.Breaching, 3)
	require.Equal(t, 2, res.Firing)
	require.Len(t, out.alerts, 2)
	require.Equal(t, "10.0.0.1", out.alerts[0].Labels["ip"])
	require.Equal(t, "10.0.0.2", out.alerts[1].Labels["ip"])
	require.Equal(t, "10.0.0.1=5, 10.0.0.2=4, 10.0.0.3=3", out.alerts[0].Annotations["top_offenders"])
	require.Equal(t, "10.0.0.2=4, 10.0.0.1=5, 10.0.0.3=3", out.alerts[1].Annotations["top_offenders"], "the alert's own group first")
	require.Equal(t, "acme", out.alerts[0].Labels["tenant"])
}

// Alerts of a rule that was removed, or whose labels changed, are resolved.
func TestChangedRuleResolvesItsAlerts(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	src := `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 5m
    threshold: 2
    severity: warning
`
	ev, out := newTestEvaluator(t, src, clock)
	countAt(t, ev, "fp", "10.0.0.1", "u", 3)
	require.Len(t, out.alerts, 1, "raised by the real-time path")
	require.Equal(t, 1.0, testutil.ToFloat64(ev.m.realtime))

	// Same rule, other severity: the old alert resolves, a new one fires.
	ev.rules.Store(thtest.Rules(t, strings.Replace(src, "severity: warning", "severity: critical", 1)))
	r, _ := ev.rules.Load().Get("PerIP")
	_, err := ev.check(ctx, r, clock.Now())
	require.NoError(t, err)
	require.Len(t, out.alerts, 3)
	require.True(t, out.alerts[1].Resolved(clock.Now()))
	require.Equal(t, "warning", out.alerts[1].Labels["severity"])
	require.Equal(t, "critical", out.alerts[2].Labels["severity"])

	// Rule removed: the re-send round resolves its alert.
	ev.rules.Store(thtest.Rules(t, "rules: []"))
	require.NoError(t, ev.resendActive(ctx, clock.Now()))
	require.Len(t, out.alerts, 4)
	require.True(t, out.alerts[3].Resolved(clock.Now()))
	active, err := ev.st.ActiveAlerts(ctx)
	require.NoError(t, err)
	require.Empty(t, active)
}

// Ratio rules fire only with enough events, and only on schedule.
func TestRatioRule(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	ev, out := newTestEvaluator(t, `
rules:
  - name: Spike
    types: [fp]
    ratio: {of: [s, fp]}
    min_events: 10
    window: 5m
    threshold: 0.5
`, clock)
	r, _ := ev.rules.Load().Get("Spike")
	countAt(t, ev, "fp", "10.0.0.1", "u", 8)
	res, err := ev.check(ctx, r, clock.Now())
	require.NoError(t, err)
	require.False(t, res.Breached, "8 events < min_events")
	require.Zero(t, res.Value)
	countAt(t, ev, "s", "10.0.0.1", "u", 4)
	require.Empty(t, out.alerts, "ratio rules have no real-time path")
	res, err = ev.check(ctx, r, clock.Now())
	require.NoError(t, err)
	require.True(t, res.Breached)
	require.InDelta(t, 8.0/12, res.Value, 1e-9)
	require.Len(t, out.alerts, 1)
	require.Equal(t, "0.6667", out.alerts[0].Annotations["value"])
	require.Equal(t, map[string]string{"alertname": "Spike", "severity": "warning", "tenant": "acme"}, out.alerts[0].Labels)
}

// rules test reports each failed expectation precisely.
func TestRuleTestFailures(t *testing.T) {
	dir := t.TempDir()
	writeRules(t, dir, "rules.yml", `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 5m
    threshold: 3
`)
	test := writeRules(t, dir, "bad.test.yml", `
rule_files: [rules.yml]
tests:
  - name: wrong expectations
    events:
      - {type: fp, ip: 10.0.0.1, at: 0s, repeat: 4}
      - {type: fp, ip: 10.0.0.2, at: 0s, repeat: 1}
    alert_rule_test:
      - eval_time: 1m
        alertname: PerIP
        exp_alerts:
          - exp_labels: {severity: warning, ip: 10.0.0.2}
      - eval_time: 1m
        alertname: PerIP
        exp_alerts:
          - exp_labels: {severity: warning, ip: 10.0.0.1}
            exp_value: 5
            exp_annotations: {window: 10m}
  - name: must not fire
    events:
      - {type: fp, ip: 10.0.0.1, at: 0s, repeat: 3}
    alert_rule_test:
      - eval_time: 1m
        alertname: PerIP
        exp_alerts: []
  - name: passes
    events:
      - {type: fp, ip: 10.0.0.1, at: 0s, repeat: 3}
    alert_rule_test:
      - eval_time: 6m
        alertname: PerIP
        exp_alerts: []
`)
	var out bytes.Buffer
	err := TestFiles([]string{test}, &out)
	require.EqualError(t, err, "rules test: 1 of 1 files failed")
	require.Equal(t, strings.Join([]string{
		test + `: FAIL test "wrong expectations": eval_time 1m, alertname PerIP: expected alert {ip="10.0.0.2", severity="warning"} did not fire (firing: {ip="10.0.0.1", severity="warning"})`,
		test + `: FAIL test "wrong expectations": eval_time 1m, alertname PerIP: unexpected alert {ip="10.0.0.1", severity="warning"} (value 4)`,
		test + `: FAIL test "wrong expectations": eval_time 1m, alertname PerIP: alert {ip="10.0.0.1", severity="warning"}: value 4, want 5`,
		test + `: FAIL test "wrong expectations": eval_time 1m, alertname PerIP: alert {ip="10.0.0.1", severity="warning"}: annotation window = "5m", want "10m"`,
		test + `: FAIL test "must not fire": eval_time 1m, alertname PerIP: unexpected alert {ip="10.0.0.1", severity="warning"} (value 3)`,
		test + `: 2 of 3 tests failed`,
	}, "\n")+"\n", out.String())

	bad := writeRules(t, dir, "unknown.test.yml", "rule_files: [rules.yml]\ntests: []\nevals: 1\n")
	out.Reset()
	require.Error(t, TestFiles([]string{bad}, &out))
	require.Contains(t, out.String(), "field evals not found")
}

// A burst dated a little ahead of this clock (clock skew between Auth0 and
// the worker) is counted as now, so the real-time evaluation right after it
// sees it all, also across a bucket boundary.
func TestRealtimeCountsEventsDatedAhead(t *testing.T) {
	// 9.5 s into a 10 s bucket (5m window / 30).
	now := time.Date(2025, 1, 1, 0, 0, 9, 500e6, time.UTC)
	clock := clockwork.NewFakeClockAt(now)
	ev, out := newTestEvaluator(t, `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 5m
    threshold: 20
`, clock)
	var evs []store.Event
	for i := range 25 {
		evs = append(evs, store.Event{ID: fmt.Sprintf("%d-0", i), Date: now.Add(time.Duration(i) * 100 * time.Millisecond),
			Type: "fp", Fields: [5]string{"203.0.113.7"}})
	}
	require.NoError(t, ev.countEvents(context.Background(), evs, nil))
	require.Len(t, out.alerts, 1, "raised in real time")
	require.Equal(t, "203.0.113.7", out.alerts[0].Labels["ip"])
}

// countBatch counts an event by the fields it carries, only for the rules
// that count its type: the fp is counted by its ip, the s not at all.
func TestCountBatchCountsByType(t *testing.T) {
	const failures = `
rules:
  - name: PerIP
    types: [fp]
    group_by: ip
    window: 1m
    threshold: 3
  - name: Ratio
    types: [fp]
    ratio: {of: [fu, fp]}
    window: 1m
    threshold: 0.5
`
	at := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	ev, _ := newTestEvaluator(t, failures, clockwork.NewFakeClockAt(at))
	rs := ev.rules.Load()
	s := thtest.Log(t, "s", at, map[string]string{"ip": "10.0.0.1", "user_name": "u1"})
	fp := thtest.Log(t, "fp", at, map[string]string{"ip": "10.0.0.2"})
	heads := []store.Event{}
	for i, raw := range [][]byte{fp.Raw, s.Raw} {
		l, err := auth0log.DecodeShared(raw)
		require.NoError(t, err)
		heads = append(heads, store.NewEvent(fmt.Sprintf("%d-0", i+2), l))
	}
	require.NoError(t, ev.countBatch(t.Context(), heads, nil, false))
	r, _ := rs.Get("PerIP")
	lo, hi := store.WindowBuckets(r, at)
	got, err := ev.st.Eval(t.Context(), store.Query{Rule: r, Lo: lo, Hi: hi, Groups: []string{"10.0.0.2", "10.0.0.1"}})
	require.NoError(t, err)
	require.Equal(t, []store.GroupValue{{Group: "10.0.0.2", Value: 1}, {Group: "10.0.0.1", Value: 0}}, got.Values)
}
