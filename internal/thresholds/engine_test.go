package thresholds

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// fakeAM records what is posted to /api/v2/alerts.
type fakeAM struct {
	*httptest.Server
	mu       sync.Mutex
	posts    [][]notify.Alert
	received []time.Time // clock time of each alert
	now      func() time.Time
	status   []int // scripted statuses, then 200
	requests int
}

func newFakeAM(t *testing.T, clock clockwork.Clock) *fakeAM {
	am := &fakeAM{now: clock.Now}
	am.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		am.mu.Lock()
		defer am.mu.Unlock()
		am.requests++
		if r.Method != http.MethodPost || r.URL.Path != "/api/v2/alerts" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if len(am.status) > 0 {
			code := am.status[0]
			am.status = am.status[1:]
			w.WriteHeader(code)
			return
		}
		var alerts []notify.Alert
		if err := json.NewDecoder(r.Body).Decode(&alerts); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		am.posts = append(am.posts, alerts)
		for range alerts {
			am.received = append(am.received, am.now())
		}
	}))
	t.Cleanup(am.Close)
	return am
}

func (am *fakeAM) all() []notify.Alert {
	am.mu.Lock()
	defer am.mu.Unlock()
	var out []notify.Alert
	for _, p := range am.posts {
		out = append(out, p...)
	}
	return out
}

func (am *fakeAM) count() int { return len(am.all()) }

// resolutions returns the alerts that were resolutions when received.
func (am *fakeAM) resolutions() []notify.Alert {
	am.mu.Lock()
	defer am.mu.Unlock()
	var out []notify.Alert
	i := 0
	for _, p := range am.posts {
		for _, a := range p {
			if a.Resolved(am.received[i]) {
				out = append(out, a)
			}
			i++
		}
	}
	return out
}

const failedLoginsRule = `
rules:
  - name: FailedLoginsPerIP
    types: [f, fp, fu]
    group_by: ip
    window: 5m
    threshold: 20
    every: %EVERY%
    severity: warning
    labels: {category: brute_force}
    annotations:
      summary: "{{ .Value }} failed logins from IP {{ .Group }} in {{ .Window }}"
`

type harness struct {
	t      *testing.T
	clock  clockwork.Clock
	buf    *buffer.Redis
	eng    *Engine
	reg    *prometheus.Registry
	tenant string
	cancel context.CancelFunc
	done   chan error
}

func startEngine(t *testing.T, cfg Config, client redis.UniversalClient, clock clockwork.Clock) *harness {
	t.Helper()
	h := &harness{t: t, clock: clock, reg: prometheus.NewPedanticRegistry(), tenant: cfg.Tenant}
	h.buf = thtest.RedisBuffer(t, client, cfg.Tenant, clock)
	cfg.Buffer = h.buf
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = -1
	}
	var err error
	h.eng, err = New(cfg, Deps{Registerer: h.reg, Clock: clock})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.eng.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
	case <-time.After(10 * time.Second):
		h.t.Fatal("engine did not stop")
	}
	h.cancel = nil
}

func (h *harness) counter(name string, labels ...string) float64 {
	h.t.Helper()
	m := h.eng.m
	var c prometheus.Collector
	switch name {
	case "checks":
		c = m.checks.WithLabelValues(labels...)
	case "breached":
		c = m.breached.WithLabelValues(labels...)
	case "value":
		c = m.value.WithLabelValues(labels...)
	case "jobRuns":
		c = m.jobRuns.WithLabelValues(labels...)
	case "leader":
		c = m.leader
	case "reloadOK":
		c = m.reloadOK
	case "realtime":
		c = m.realtime
	case "sent":
		c = m.Sent.WithLabelValues(labels...)
	}
	return testutil.ToFloat64(c)
}

// advance moves the fake clock by d in one-second steps, giving the
// engine's goroutines (lease keeper, scheduler) time to follow, as a real
// clock would.
func (h *harness) advance(d time.Duration) {
	fc := h.clock.(*clockwork.FakeClock)
	for d > 0 {
		step := min(d, time.Second)
		fc.Advance(step)
		d -= step
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitCounted() {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		st, err := h.buf.Stats(context.Background(), DefaultGroup)
		return err == nil && st.Backlog == 0
	}, 5*time.Second, 5*time.Millisecond, "the thresholds group takes every entry")
}

// 40 failed logins from one IP: breached 1 and an alert at the
// Alertmanager within one check interval (the scheduled path alone); it is
// re-sent while active and resolved with endsAt once the window has passed.
func TestFailedLoginsAlertAndResolve(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	am := newFakeAM(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s"))
	// The lease outlasts the test: its validity runs on the fake clock, its
	// Redis key on the real one, so a renewal the busy scheduler misses
	// while the fake clock races ahead would leave no leader for a while.
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: path, AlertmanagerURL: am.URL, DisableRealtime: true,
		LeaseTTL: time.Hour}, testredis.Client(t), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond, "first check at start")
	require.Equal(t, 1.0, h.counter("leader"))
	require.Equal(t, 0.0, h.counter("breached", rule))
	require.Equal(t, 1.0, testutil.ToFloat64(h.eng.m.Configured.WithLabelValues(notify.ReceiverAlertmanager)))
	require.Equal(t, 0.0, testutil.ToFloat64(h.eng.m.Configured.WithLabelValues(notify.ReceiverWebhook)))

	burstAt := clock.Now()
	_, err := h.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", burstAt), "")
	require.NoError(t, err)
	h.waitCounted()
	require.Zero(t, am.count(), "real-time path is off: nothing before the next check")

	// Step the fake clock until the alert arrives: raised by a check at
	// most one check interval after the burst. Its startsAt is that
	// check's time (the clock may have run ahead of a busy scheduler when
	// the test sees the alert).
	for am.count() == 0 {
		require.Less(t, clock.Since(burstAt), 2*time.Minute, "no alert")
		h.advance(time.Second)
	}
	firedAt := am.all()[0].StartsAt
	t.Logf("alert after %s of fake time", firedAt.Sub(burstAt))
	require.LessOrEqual(t, firedAt.Sub(burstAt), 30*time.Second, "raised within one check interval")
	require.Eventually(t, func() bool { return h.counter("breached", rule) == 1 }, time.Second, 5*time.Millisecond)
	require.Equal(t, 40.0, h.counter("value", rule))

	a := am.all()[0]
	require.Equal(t, map[string]string{"alertname": rule, "severity": "warning", "tenant": h.tenant,
		"category": "brute_force", "ip": "203.0.113.7"}, a.Labels)
	require.Equal(t, map[string]string{"value": "40", "threshold": "20", "window": "5m",
		"top_offenders": "203.0.113.7=40", "summary": "40 failed logins from IP 203.0.113.7 in 5m"}, a.Annotations)
	require.True(t, a.EndsAt.After(a.StartsAt.Add(3*time.Minute)), "firing: endsAt well ahead")

	// Re-sent while active, then resolved once the window has passed.
	for len(am.resolutions()) == 0 {
		require.Less(t, clock.Since(burstAt), 10*time.Minute, "never resolved")
		h.advance(time.Second)
	}
	resolved := am.resolutions()[0]
	// A resolution's endsAt is the time of the check that resolved it. The
	// 21st-newest event (at burstAt−1.9s) leaves the window at
	// burstAt+5m−1.9s, give or take one 10 s bucket.
	resolvedAfter := resolved.EndsAt.Sub(burstAt)
	require.GreaterOrEqual(t, resolvedAfter, 5*time.Minute-2*time.Second, "resolved only after the window")
	require.Less(t, resolvedAfter, 5*time.Minute+10*time.Second+30*time.Second+2*time.Second, "resolved within window + bucket + interval")
	t.Logf("resolved after %s of fake time", resolvedAfter)
	require.Equal(t, a.Labels, resolved.Labels)
	require.True(t, resolved.StartsAt.Equal(a.StartsAt))
	resends := 0
	for _, x := range am.all() {
		require.True(t, x.StartsAt.Equal(a.StartsAt), "a re-send keeps startsAt")
		resends++
	}
	resends-- // the resolution
	require.GreaterOrEqual(t, resends, 1+3, "first send and at least one re-send per minute while active")
	require.Eventually(t, func() bool { return h.counter("breached", rule) == 0 }, time.Second, 5*time.Millisecond)
	// The counter moves once the sender has read Alertmanager's answer.
	require.Eventually(t, func() bool { return float64(am.count()) == h.counter("sent", notify.ReceiverAlertmanager) }, time.Second, 5*time.Millisecond,
		"every alert Alertmanager took is counted as sent")

	// Group values never become label values.
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				require.NotContains(t, l.GetValue(), "203.0.113.7", mf.GetName())
			}
		}
	}
}

// With every: 1m, a burst's alert arrives within 2 s of the burst reaching
// the buffer: the real-time path, not the next tick (the fake clock does
// not move, so no tick comes).
func TestRealtimeAlert(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	am := newFakeAM(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1m"))
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: path, AlertmanagerURL: am.URL}, testredis.Client(t), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)

	// 19 failures: below the threshold, nothing fires. An undecodable entry
	// is acknowledged, not counted.
	bad := thtest.Log(t, "fp", clock.Now(), nil)
	bad.Raw = []byte(`{"log_id": "oops"}`)
	_, err := h.buf.Append(ctx, append(thtest.Burst(t, 19, "fp", "198.51.100.1", clock.Now()), bad), "")
	require.NoError(t, err)
	h.waitCounted()
	// The counters move just after the script acknowledged the entries.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.eng.m.events.WithLabelValues(resultInvalid)) == 1 &&
			testutil.ToFloat64(h.eng.m.events.WithLabelValues(resultCounted)) == 19
	}, 2*time.Second, time.Millisecond, "one invalid entry acknowledged, 19 counted")

	start := time.Now()
	_, err = h.buf.Append(ctx, thtest.Burst(t, 40, "fp", "203.0.113.7", clock.Now()), "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return am.count() > 0 }, 2*time.Second, time.Millisecond, "alert within 2 s of the burst")
	t.Logf("real-time alert %s after the burst was buffered", time.Since(start))
	alerts := am.all()
	require.Len(t, alerts, 1)
	require.Equal(t, "203.0.113.7", alerts[0].Labels["ip"])
	require.Equal(t, "40", alerts[0].Annotations["value"])
	require.Equal(t, 1.0, h.counter("checks", rule), "no scheduled check ran")
	require.Equal(t, 1.0, h.counter("realtime"))
	require.Equal(t, 1.0, h.counter("breached", rule))

	// The next scheduled check keeps the same alert (no second raise).
	h.advance(time.Minute)
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 2 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	for _, a := range am.all() {
		require.True(t, a.StartsAt.Equal(alerts[0].StartsAt), "same alert, re-sent at most")
	}
	require.Equal(t, 1.0, h.counter("breached", rule))
}

// Two engines against one Redis: exactly one evaluates; stop it and the
// other takes over within one lease period.
func TestOneEngineEvaluates(t *testing.T) {
	tenant := testredis.Name(t)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1s"))
	ttl := time.Second
	cfg := func(consumer string) Config {
		return Config{Tenant: tenant, RulesPath: path, LeaseTTL: ttl, Consumer: consumer}
	}
	a := startEngine(t, cfg("a"), testredis.Client(t), clockwork.NewRealClock())
	b := startEngine(t, cfg("b"), testredis.Client(t), clockwork.NewRealClock())
	rule := "FailedLoginsPerIP"

	time.Sleep(2500 * time.Millisecond)
	leader, other := a, b
	if b.counter("leader") == 1 {
		leader, other = b, a
	}
	require.Equal(t, 1.0, leader.counter("leader"))
	require.Equal(t, 0.0, other.counter("leader"))
	require.GreaterOrEqual(t, leader.counter("checks", rule), 2.0)
	require.Equal(t, 0.0, other.counter("checks", rule), "the other replica evaluates nothing")
	require.GreaterOrEqual(t, other.counter("jobRuns", rule, "skip"), 1.0, "its jobs are skipped by the elector")

	stopped := time.Now()
	leader.stop()
	require.Eventually(t, func() bool { return other.counter("leader") == 1 }, ttl, 5*time.Millisecond, "take-over within one lease period")
	t.Logf("take-over %s after the leader stopped", time.Since(stopped))
	require.Eventually(t, func() bool { return other.counter("checks", rule) >= 1 }, 2*ttl, 5*time.Millisecond)
}

// A leader that is cut off from Redis (as if killed) stops evaluating within
// one lease period, and the other replica takes over once the lease key
// expires.
func TestEngineTakeOverAfterCrash(t *testing.T) {
	tenant := testredis.Name(t)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1s"))
	ttl := time.Second
	ca := redis.NewClient(&redis.Options{Addr: testredis.Addr(t), MaxRetries: -1})
	a := startEngine(t, Config{Tenant: tenant, RulesPath: path, LeaseTTL: ttl, Consumer: "a"}, ca, clockwork.NewRealClock())
	require.Eventually(t, func() bool { return a.counter("leader") == 1 }, 2*time.Second, 5*time.Millisecond)
	b := startEngine(t, Config{Tenant: tenant, RulesPath: path, LeaseTTL: ttl, Consumer: "b"}, testredis.Client(t), clockwork.NewRealClock())
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 0.0, b.counter("leader"))

	cut := time.Now()
	require.NoError(t, ca.Close())
	require.Eventually(t, func() bool { return !a.eng.Leader() }, ttl, 5*time.Millisecond, "the cut-off leader stops within one lease period")
	// The key expires at most TTL after a's last renewal; b retries every TTL/3.
	require.Eventually(t, func() bool { return b.counter("leader") == 1 }, ttl+ttl/3+300*time.Millisecond, 5*time.Millisecond)
	t.Logf("b leads %s after a was cut off", time.Since(cut))
	require.Eventually(t, func() bool { return b.counter("checks", "FailedLoginsPerIP") >= 1 }, 2*ttl, 5*time.Millisecond)
}

// A reload with a bad file keeps the old rules running and reports 0; a
// fixed file is picked up by the file-change poll.
func TestReloadKeepsOldRulesOnBadFile(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	path := writeRules(t, dir, "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s"))
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: dir, ReloadInterval: 10 * time.Second}, testredis.Client(t), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, h.counter("reloadOK"))

	writeRules(t, dir, "rules.yml", "rules:\n  - name: X\n    types: [fp]\n    windw: 5m\n")
	err := h.eng.Reload()
	require.ErrorContains(t, err, path+`:4: rule "X": field "windw": unknown field`)
	require.Equal(t, 0.0, h.counter("reloadOK"))
	require.Equal(t, []string{rule}, h.eng.Rules().Names(), "old rules kept")
	checks := h.counter("checks", rule)
	h.advance(30 * time.Second)
	require.Eventually(t, func() bool { return h.counter("checks", rule) > checks }, 5*time.Second, 5*time.Millisecond, "old rules keep running")

	// Fixed (and extended) file: the poll reloads it.
	writeRules(t, dir, "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s")+`
  - name: Blocked
    types: [limit_wc]
    window: 5m
    threshold: 1
    every: 30s
`)
	require.Eventually(t, func() bool {
		clock.Advance(time.Second)
		return h.counter("reloadOK") == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{rule, "Blocked"}, h.eng.Rules().Names())
	require.Eventually(t, func() bool { return h.counter("checks", "Blocked") >= 1 }, 5*time.Second, 5*time.Millisecond)
}

// A reload whose rules parse but whose jobs cannot all be scheduled (gocron
// refuses the first rule's schedule) changes nothing: the old rules and
// their jobs keep running, the new rule gets no series, and
// authpipe_rules_last_reload_successful is 0. Once the jobs can be built,
// the same files replace the old rules and their schedule whole.
func TestReloadKeepsOldJobsWhenSchedulingFails(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	writeRules(t, dir, "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "30s"))
	// The lease outlasts the test (see TestFailedLoginsAlertAndResolve).
	h := startEngine(t, Config{Tenant: testredis.Name(t), RulesPath: dir, LeaseTTL: time.Hour}, testredis.Client(t), clock)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond)

	// New rules: Blocked first, then the old rule every hour instead of 30s.
	writeRules(t, dir, "rules.yml", `
rules:
  - name: Blocked
    types: [limit_wc]
    window: 5m
    threshold: 1
    every: 30s`+strings.TrimPrefix(strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1h"), "\nrules:"))
	h.eng.mu.Lock()
	h.eng.jobDef = func(r *rules.Rule) gocron.JobDefinition {
		if r.Name == "Blocked" {
			return gocron.DurationJob(0) // gocron: ErrDurationJobIntervalZero
		}
		return jobDefinition(r)
	}
	h.eng.mu.Unlock()
	err := h.eng.Reload()
	require.ErrorIs(t, err, gocron.ErrDurationJobIntervalZero)
	require.ErrorContains(t, err, "reload threshold rules: schedule rule Blocked:")
	require.Equal(t, 0.0, h.counter("reloadOK"))
	require.Equal(t, []string{rule}, h.eng.Rules().Names(), "old rules kept")
	checks := h.counter("checks", rule)
	h.advance(30 * time.Second)
	require.Eventually(t, func() bool { return h.counter("checks", rule) > checks }, 5*time.Second, 5*time.Millisecond,
		"the old job keeps its 30s schedule")
	mfs, err := h.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				require.NotEqual(t, "Blocked", l.GetValue(), "%s: no series for a rule not in force", mf.GetName())
			}
		}
	}

	h.eng.mu.Lock()
	h.eng.jobDef = jobDefinition
	h.eng.mu.Unlock()
	require.NoError(t, h.eng.Reload())
	require.Equal(t, 1.0, h.counter("reloadOK"))
	require.Equal(t, []string{"Blocked", rule}, h.eng.Rules().Names())
	require.Eventually(t, func() bool { return h.counter("checks", "Blocked") >= 1 && h.counter("checks", rule) > checks+1 },
		5*time.Second, 5*time.Millisecond, "both checked at once")
	checks = h.counter("checks", rule)
	blocked := h.counter("checks", "Blocked")
	h.advance(time.Minute)
	require.Eventually(t, func() bool { return h.counter("checks", "Blocked") >= blocked+2 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, checks, h.counter("checks", rule), "the old 30s job is gone: the rule runs every hour now")
}

func TestConfigValidate(t *testing.T) {
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{Tenant: "t1", RulesPath: "x", Buffer: b}, ""},
		{"tenant", Config{Tenant: "a b", RulesPath: "x", Buffer: b}, `thresholds tenant "a b": must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},
		{"no rules", Config{Tenant: "t", Buffer: b}, "thresholds rules path: empty"},
		{"no buffer", Config{Tenant: "t", RulesPath: "x"}, "thresholds buffer: missing"},
		{"bad url", Config{Tenant: "t", RulesPath: "x", Buffer: b, AlertmanagerURL: "localhost:9093"}, "thresholds alertmanager URL: want http(s)://host[:port][/path]"},
		{"lease", Config{Tenant: "t", RulesPath: "x", Buffer: b, LeaseTTL: time.Millisecond}, "thresholds lease ttl 1ms: want at least 50ms"},
		{"groups", Config{Tenant: "t", RulesPath: "x", Buffer: b, MaxGroups: 1}, "thresholds max groups 1: want at least 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tc.want)
		})
	}
	_, err := New(Config{Tenant: "t", RulesPath: "rules/testdata/unknown_field.bad.yml", Buffer: b}, Deps{})
	require.ErrorContains(t, err, `load threshold rules: rules/testdata/unknown_field.bad.yml:5: rule "BruteForce": field "windw": unknown field`)
}
