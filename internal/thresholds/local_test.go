package thresholds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
)

const shippedRules = "../../alerts/thresholds.yml"

// fakeWebhook records the alerts posted to it, with the fake clock's time
// of arrival.
type fakeWebhook struct {
	*httptest.Server
	mu     sync.Mutex
	alerts []notify.WebhookAlert
	at     []time.Time
}

func newFakeWebhook(t *testing.T, clock clockwork.Clock) *fakeWebhook {
	w := &fakeWebhook{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var p notify.WebhookPayload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range p.Alerts {
			w.alerts = append(w.alerts, a)
			w.at = append(w.at, clock.Now())
		}
	}))
	t.Cleanup(w.Close)
	return w
}

// find returns the alerts of rule with status ("firing" or "resolved").
func (w *fakeWebhook) find(rule, status string) []notify.WebhookAlert {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []notify.WebhookAlert
	for _, a := range w.alerts {
		if a.Labels["alertname"] == rule && a.Status == status {
			out = append(out, a)
		}
	}
	return out
}

func (w *fakeWebhook) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.alerts)
}

// localHarness is an engine on the embedded buffer in a temp data dir.
type localHarness struct {
	*harness
	dir  string
	bolt *buffer.Bolt
}

func openBolt(t *testing.T, dir, tenant string, clock clockwork.Clock) *buffer.Bolt {
	t.Helper()
	b, err := buffer.OpenBolt(dir, buffer.Config{Tenant: tenant}, buffer.Deps{Clock: clock, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	return b
}

// startLocal opens the buffer in dir and runs an engine on it (on lb
// instead, if given, which must wrap that buffer).
func startLocal(t *testing.T, cfg Config, dir string, clock clockwork.Clock, wrap func(*buffer.Bolt) LocalBuffer) *localHarness {
	t.Helper()
	if cfg.Tenant == "" {
		cfg.Tenant = "acme"
	}
	h := &localHarness{harness: &harness{t: t, clock: clock, reg: prometheus.NewPedanticRegistry(), tenant: cfg.Tenant}, dir: dir}
	h.bolt = openBolt(t, dir, cfg.Tenant, clock)
	cfg.Local = h.bolt
	if wrap != nil {
		cfg.Local = wrap(h.bolt)
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = -1
	}
	if cfg.ReadBlock == 0 {
		cfg.ReadBlock = 20 * time.Millisecond
	}
	var err error
	h.eng, err = New(cfg, Deps{Registerer: h.reg, Clock: clock})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.eng.Run(ctx) }()
	t.Cleanup(h.close)
	return h
}

// close stops the engine and closes the buffer, as a shutdown does.
func (h *localHarness) close() {
	h.stop()
	require.NoError(h.t, h.bolt.Close())
}

func (h *localHarness) append(logs []auth0log.Log) {
	h.t.Helper()
	_, err := h.bolt.Append(context.Background(), logs, "")
	require.NoError(h.t, err)
}

func (h *localHarness) waitCounted() {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		st, err := h.bolt.Stats(context.Background(), DefaultGroup)
		return err == nil && st.Backlog == 0
	}, 5*time.Second, 5*time.Millisecond, "the thresholds group takes every entry")
}

func (h *localHarness) events(result string) float64 {
	return testutil.ToFloat64(h.eng.m.events.WithLabelValues(result))
}

// On the embedded buffer: 40 failed logins from one IP breach
// FailedLoginsPerIP and the alert reaches the webhook within 2 s, before
// any tick (real-time path, every: 1m); it is resolved once the window has
// passed (fake clock), and the counts are then pruned to nothing.
func TestLocalFailedLoginsAlertAndResolve(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	wh := newFakeWebhook(t, clock)
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1m"))
	h := startLocal(t, Config{RulesPath: path, WebhookURL: wh.URL}, t.TempDir(), clock, nil)
	rule := "FailedLoginsPerIP"
	require.Eventually(t, func() bool { return h.counter("checks", rule) >= 1 }, 5*time.Second, 5*time.Millisecond, "first check at start")
	require.Equal(t, 1.0, h.counter("leader"), "one process: always the leader")
	require.True(t, h.eng.Leader())

	burstAt := clock.Now()
	start := time.Now()
	h.append(thtest.Burst(t, 40, "fp", "203.0.113.7", burstAt))
	require.Eventually(t, func() bool { return len(wh.find(rule, "firing")) > 0 }, 2*time.Second, time.Millisecond, "alert within 2 s")
	t.Logf("real-time alert %s after the burst was buffered", time.Since(start))
	require.Equal(t, 1.0, h.counter("checks", rule), "no scheduled check ran")
	require.Equal(t, 1.0, h.counter("breached", rule))
	require.Equal(t, 40.0, h.counter("value", rule))
	a := wh.find(rule, "firing")[0]
	require.Equal(t, map[string]string{"alertname": rule, "severity": "warning", "tenant": "acme",
		"category": "brute_force", "ip": "203.0.113.7"}, a.Labels)
	require.Equal(t, "40", a.Annotations["value"])
	h.waitCounted()
	require.Equal(t, 40.0, h.events(resultCounted))
	require.Eventually(t, func() bool {
		keys, ids := h.eng.mem.Size()
		return keys > 0 && ids == 0
	}, time.Second, time.Millisecond, "acknowledged entries are forgotten, their counts kept")

	// Resolved by the scheduled check once the window has passed.
	for len(wh.find(rule, "resolved")) == 0 {
		require.Less(t, clock.Since(burstAt), 5*time.Minute+10*time.Second+time.Minute+2*time.Second, "not resolved within window + bucket + interval")
		h.advance(time.Second)
	}
	require.GreaterOrEqual(t, clock.Since(burstAt), 5*time.Minute-2*time.Second, "resolved only after the window")
	t.Logf("resolved after %s of fake time", clock.Since(burstAt))
	resolved := wh.find(rule, "resolved")[0]
	require.Equal(t, a.Labels, resolved.Labels)
	require.True(t, resolved.StartsAt.Equal(a.StartsAt))
	require.Eventually(t, func() bool { return h.counter("breached", rule) == 0 }, time.Second, 5*time.Millisecond)

	// Every bucket expires one window (and store.KeyGrace) after it ends.
	h.advance(2 * time.Minute)
	require.Eventually(t, func() bool {
		keys, _ := h.eng.mem.Size()
		return keys == 0
	}, 5*time.Second, 5*time.Millisecond, "expired counts are pruned")
}

// With the shipped rules, credential stuffing (one IP, many user names
// failing) fires CredentialStuffing and a brute force (one IP, one account,
// many failures) fires FailedLoginsPerIP, each in real time.
func TestLocalShippedRulesFireBruteForceAndCredentialStuffing(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	wh := newFakeWebhook(t, clock)
	h := startLocal(t, Config{RulesPath: shippedRules, WebhookURL: wh.URL}, t.TempDir(), clock, nil)
	require.Eventually(t, func() bool { return h.counter("checks", "CredentialStuffing") >= 1 }, 5*time.Second, 5*time.Millisecond)

	now := clock.Now()
	var stuffing []auth0log.Log
	for i := range 15 {
		stuffing = append(stuffing, thtest.Log(t, "fu", now.Add(time.Duration(i-15)*time.Second),
			map[string]string{"ip": "198.51.100.23", "user_name": fmt.Sprintf("victim%d@example.com", i)}))
	}
	var brute []auth0log.Log
	for i := range 25 {
		brute = append(brute, thtest.Log(t, "fp", now.Add(time.Duration(i-25)*time.Second),
			map[string]string{"ip": "203.0.113.9", "user_name": "alice@example.com", "user_id": "auth0|alice"}))
	}
	h.append(stuffing)
	h.append(brute)

	require.Eventually(t, func() bool {
		return len(wh.find("CredentialStuffing", "firing")) > 0 && len(wh.find("FailedLoginsPerIP", "firing")) > 0
	}, 2*time.Second, time.Millisecond, "both alerts within 2 s")
	cs := wh.find("CredentialStuffing", "firing")
	require.Len(t, cs, 1)
	require.Equal(t, "198.51.100.23", cs[0].Labels["ip"])
	require.Equal(t, "critical", cs[0].Labels["severity"])
	require.Equal(t, "15", cs[0].Annotations["value"])
	bf := wh.find("FailedLoginsPerIP", "firing")
	require.Len(t, bf, 1, "15 failures from the stuffing IP stay below 20")
	require.Equal(t, "203.0.113.9", bf[0].Labels["ip"])
	require.Equal(t, "25", bf[0].Annotations["value"])
	require.Equal(t, 1.0, h.counter("breached", "CredentialStuffing"))
	require.Equal(t, 1.0, h.counter("breached", "FailedLoginsPerIP"))
	require.Empty(t, wh.find("PasswordSpraying", "firing"))
}

// Counts survive a restart: they are rebuilt from the buffer the engine
// left behind (same values), entries older than every window are not read
// again, and the alert firing before is raised again.
func TestLocalRebuildAfterRestart(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	wh := newFakeWebhook(t, clock)
	cfg := Config{RulesPath: shippedRules, WebhookURL: wh.URL}

	h := startLocal(t, cfg, dir, clock, nil)
	rules := h.eng.Rules().Names()
	// Old traffic (below every threshold), out of every window by the time
	// of the restart.
	h.append(thtest.Burst(t, 15, "fp", "192.0.2.1", clock.Now()))
	h.waitCounted()
	clock.Advance(2 * time.Hour)
	// Recent traffic: a brute force, stuffing, spraying, a failure-ratio mix.
	now := clock.Now()
	var logs []auth0log.Log
	logs = append(logs, thtest.Burst(t, 30, "fp", "203.0.113.7", now)...)
	for i := range 12 {
		logs = append(logs, thtest.Log(t, "fu", now.Add(-time.Duration(i)*time.Second),
			map[string]string{"ip": "198.51.100.23", "user_name": fmt.Sprintf("victim%d", i)}))
		logs = append(logs, thtest.Log(t, "fp", now.Add(-time.Duration(i)*time.Second),
			map[string]string{"ip": fmt.Sprintf("10.0.0.%d", i), "user_name": "bob"}))
	}
	for i := range 40 {
		logs = append(logs, thtest.Log(t, "s", now.Add(-time.Duration(i)*time.Second), map[string]string{"ip": "10.1.1.1", "user_name": "carol"}))
	}
	h.append(logs)
	h.waitCounted()
	require.Eventually(t, func() bool { return len(wh.find("FailedLoginsPerIP", "firing")) > 0 }, 2*time.Second, time.Millisecond)

	results := func(h *localHarness) map[string]CheckResult {
		out := map[string]CheckResult{}
		for _, name := range rules {
			res, err := h.eng.Check(ctx, name)
			require.NoError(t, err)
			res.Firing = 0 // alert state is compared separately
			out[name] = res
		}
		return out
	}
	before := results(h)
	require.Equal(t, 30.0, before["FailedLoginsPerIP"].Value)
	require.Equal(t, 12.0, before["CredentialStuffing"].Value)
	require.Equal(t, 12.0, before["PasswordSpraying"].Value)
	require.True(t, before["FailureRatioSpike"].Breached)
	firing := wh.find("FailedLoginsPerIP", "firing")
	require.Len(t, firing, 1)
	firstStart := firing[0].StartsAt

	h.close()
	clock.Advance(10 * time.Second) // down for a while; every event is still in its windows

	h2 := startLocal(t, cfg, dir, clock, nil)
	require.Eventually(t, func() bool { return h2.counter("checks", "FailedLoginsPerIP") >= 1 }, 5*time.Second, 5*time.Millisecond, "checks start after the rebuild")
	require.Equal(t, float64(len(logs)), h2.events(resultCounted), "only the entries that can still be in a window are read again")
	require.Equal(t, before, results(h2), "same values after the restart")
	// Raised again by the first check (new startsAt; Alertmanager merges
	// alerts by their labels).
	require.Eventually(t, func() bool {
		for _, a := range wh.find("FailedLoginsPerIP", "firing") {
			if a.StartsAt.After(firstStart) {
				return true
			}
		}
		return false
	}, 2*time.Second, time.Millisecond, "the firing alert is raised again")
	require.Equal(t, 1.0, h2.counter("breached", "FailedLoginsPerIP"))

	// Counting goes on from the rebuilt state.
	h2.append(thtest.Burst(t, 5, "fp", "203.0.113.7", clock.Now()))
	h2.waitCounted()
	res, err := h2.eng.Check(ctx, "FailedLoginsPerIP")
	require.NoError(t, err)
	require.Equal(t, 35.0, res.Value)
}

// flakyAck fails its first acknowledgements, as a full disk would.
type flakyAck struct {
	*buffer.Bolt
	fail atomic.Int32
}

func (f *flakyAck) Ack(ctx context.Context, group string, ids ...string) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("disk full")
	}
	return f.Bolt.Ack(ctx, group, ids...)
}

// An acknowledgement that fails leaves the entries pending; they are
// delivered again and recognised: counted once. Entries counted but never
// acknowledged before a stop are counted once by the next start.
func TestLocalAckFailureCountsOnce(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	path := writeRules(t, t.TempDir(), "rules.yml", strings.ReplaceAll(failedLoginsRule, "%EVERY%", "1m"))
	var fa *flakyAck
	h := startLocal(t, Config{RulesPath: path}, t.TempDir(), clock, func(b *buffer.Bolt) LocalBuffer {
		fa = &flakyAck{Bolt: b}
		return fa
	})
	require.Eventually(t, func() bool { return h.counter("checks", "FailedLoginsPerIP") >= 1 }, 5*time.Second, 5*time.Millisecond)
	fa.fail.Store(1)
	h.append(thtest.Burst(t, 12, "fp", "203.0.113.7", clock.Now()))
	for st, _ := h.bolt.Stats(context.Background(), DefaultGroup); st.Backlog > 0; st, _ = h.bolt.Stats(context.Background(), DefaultGroup) {
		h.advance(time.Second) // the consumer backs off a second after an error
	}
	require.Equal(t, 12.0, h.events(resultCounted))
	require.Equal(t, 12.0, h.events(resultDuplicate), "the redelivery is recognised")
	res, err := h.eng.Check(context.Background(), "FailedLoginsPerIP")
	require.NoError(t, err)
	require.Equal(t, 12.0, res.Value)
	require.Eventually(t, func() bool { _, ids := h.eng.mem.Size(); return ids == 0 }, time.Second, time.Millisecond)

	// Counted but never acknowledged when the process stops (as in a
	// crash between the two): the next start counts them, once.
	fa.fail.Store(1 << 30)
	h.append(thtest.Burst(t, 5, "fp", "203.0.113.7", clock.Now()))
	require.Eventually(t, func() bool { return h.events(resultCounted) == 17 }, 5*time.Second, time.Millisecond)
	st, err := h.bolt.Stats(context.Background(), DefaultGroup)
	require.NoError(t, err)
	require.EqualValues(t, 5, st.Pending)
	h.close()
	h2 := startLocal(t, Config{RulesPath: path}, h.dir, clock, nil)
	require.Eventually(t, func() bool { return h2.counter("checks", "FailedLoginsPerIP") >= 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 17.0, h2.events(resultCounted))
	res, err = h2.eng.Check(context.Background(), "FailedLoginsPerIP")
	require.NoError(t, err)
	require.Equal(t, 17.0, res.Value)
	st, err = h2.bolt.Stats(context.Background(), DefaultGroup)
	require.NoError(t, err)
	require.Zero(t, st.Backlog)
}

// The engine takes one buffer: Redis or embedded.
func TestLocalConfigValidate(t *testing.T) {
	clock := clockwork.NewFakeClock()
	b := openBolt(t, t.TempDir(), "acme", clock)
	t.Cleanup(func() { _ = b.Close() })
	require.NoError(t, Config{Tenant: "acme", RulesPath: "x", Local: b}.Validate())
	require.EqualError(t, Config{Tenant: "acme", RulesPath: "x"}.Validate(), "thresholds buffer: missing")
	var rb Buffer = (*buffer.Redis)(nil)
	require.EqualError(t, Config{Tenant: "acme", RulesPath: "x", Local: b, Buffer: rb}.Validate(),
		"thresholds buffer: both a Redis and an embedded buffer; want one")
}
