package pipeline

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/alerts"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// world is one tenant's simulators and the configuration of an app
// against them, on the embedded buffer.
type world struct {
	auth0   *sim.Auth0
	segment *sim.Segment
	cfg     *config.Config
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{
		auth0:   sim.NewAuth0(sim.Auth0Options{ClientID: "app-test", ClientSecret: "app-test-secret"}),
		segment: sim.NewSegment(sim.SegmentOptions{WriteKey: "app-test-write-key"}),
	}
	a, s := httptest.NewServer(w.auth0), httptest.NewServer(w.segment)
	t.Cleanup(a.Close)
	t.Cleanup(s.Close)
	cfg := config.Default()
	cfg.Tenant = "apptest"
	cfg.Auth0.Domain, cfg.Auth0.ClientID, cfg.Auth0.ClientSecret = a.URL, "app-test", "app-test-secret"
	cfg.Auth0.PollInterval = 100 * time.Millisecond
	cfg.Segment.WriteKey, cfg.Segment.Endpoint = "app-test-write-key", s.URL
	cfg.Segment.FlushInterval = 50 * time.Millisecond
	cfg.DataDir = t.TempDir()
	cfg.Listen = e2etest.FreeAddr(t)
	cfg.RulesPath = filepath.Join(t.TempDir(), "thresholds.yml")
	require.NoError(t, os.WriteFile(cfg.RulesPath, alerts.Thresholds, 0o600))
	require.NoError(t, cfg.Validate())
	w.cfg = &cfg
	return w
}

// addEvents adds n events dated from start on, one every 100 ms.
func (w *world) addEvents(n int, start time.Time) []string {
	rng := rand.New(rand.NewPCG(uint64(n), 11))
	return w.auth0.Add(sim.GenerateEvents(rng, n, start, 100*time.Millisecond)...)
}

func (w *world) delivered(ids []string) int {
	got := w.segment.MessageIDs()
	n := 0
	for _, id := range ids {
		if got[w.cfg.Tenant+"-"+id] > 0 {
			n++
		}
	}
	return n
}

// get answers GET http://listen+path: the status and the body, or the
// error of a server that does not answer.
func get(listen, path string) (int, string, error) {
	resp, err := http.Get("http://" + listen + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// metricSum sums the samples of the gauge or counter name in app's registry.
func metricSum(t *testing.T, app *App, name string) float64 {
	t.Helper()
	mfs, err := app.reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// start runs the app of w until the returned stop is called; stop
// returns Run's error.
func (w *world) start(t *testing.T, logs io.Writer, hup <-chan os.Signal) (*App, func() error) {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	app, err := New(w.cfg, Deps{Logger: logger, Version: "test"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, hup) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(w.cfg.ShutdownTimeout + 10*time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	require.Eventually(t, func() bool {
		code, _, _ := get(w.cfg.Listen, "/-/ready")
		return code == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "ready")
	return app, stop
}

// TestAppStopsInContractOrder: the worker stops in the delivery
// contract's order. Readiness drops at once; the poller stops; the
// forwarder delivers the batch Segment holds (slow to answer) before it
// stops, while the HTTP server still answers; then the server stops and
// the buffer closes (its file can be opened again).
func TestAppStopsInContractOrder(t *testing.T) {
	w := newWorld(t)
	logs := &testlogs.Buffer{}
	app, stop := w.start(t, logs, nil)
	ids := w.addEvents(200, time.Now().Add(-time.Hour))
	require.Eventually(t, func() bool { return w.delivered(ids) == len(ids) }, 20*time.Second, 20*time.Millisecond)

	// Segment now takes 1.5 s to answer; new events are polled and handed
	// to it, then the worker is asked to stop.
	const delay = 1500 * time.Millisecond
	w.segment.SetDelay(delay)
	more := w.addEvents(50, time.Now().Add(-time.Minute))
	all := append(ids, more...)
	waiting := func() int { // requests Segment has not answered yet
		st := w.segment.Stats()
		for _, n := range st.Status {
			st.Requests -= n
		}
		return st.Requests
	}
	require.Eventually(t, func() bool {
		return metricSum(t, app, "authpipe_auth0_events_polled_total") == float64(len(all)) && waiting() > 0
	}, 10*time.Second, 5*time.Millisecond, "the new events polled, a batch at Segment")

	stopped := make(chan error, 1)
	asked := time.Now()
	go func() { stopped <- stop() }()
	require.Eventually(t, func() bool {
		code, body, err := get(w.cfg.Listen, "/-/ready")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
	}, time.Second, 5*time.Millisecond, "readiness drops as the stop begins")
	require.Zero(t, testutil.ToFloat64(app.ready))
	// While the forwarder waits for Segment, the server still answers.
	require.Positive(t, waiting())
	code, _, err := get(w.cfg.Listen, "/metrics")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, "the HTTP server serves during the drain")

	require.NoError(t, <-stopped)
	require.GreaterOrEqual(t, time.Since(asked), delay/2, "the stop waited for Segment:\n%s", logs.String())
	require.Equal(t, len(all), w.delivered(all), "the forwarder delivered what it held")
	_, _, err = get(w.cfg.Listen, "/-/healthy")
	require.Error(t, err, "the HTTP server has stopped")
	b, err := buffer.OpenBolt(w.cfg.DataDir, buffer.Config{Tenant: w.cfg.Tenant}, buffer.Deps{})
	require.NoError(t, err, "the buffer was closed")
	require.NoError(t, b.Close())

	lines := logs.String()
	order := []string{"shutdown requested", "auth0 poller stopped", "forwarder stopped: everything read was resolved", "authpipe stopped"}
	at := -1
	for _, msg := range order {
		i := strings.Index(lines, `"msg":"`+msg)
		require.Greater(t, i, at, "%q logged after %v:\n%s", msg, order, lines)
		at = i
	}
	require.NotContains(t, lines, "did not stop in time")
	require.NotContains(t, lines, "shutdown timed out")
}

// TestAppSIGHUPReloadsRules: a signal on hup reloads every tenant's
// rules; a broken file leaves the previous rules in force; the signal
// handling ends with the app.
func TestAppSIGHUPReloadsRules(t *testing.T) {
	w := newWorld(t)
	logs := &testlogs.Buffer{}
	hup := make(chan os.Signal, 1)
	app, stop := w.start(t, logs, hup)
	before := len(app.tenants[0].rules.Rules().Rules)

	one := "rules:\n  - name: OnlyRule\n    types: [f]\n    window: 5m\n    threshold: 3\n    every: 30s\n    severity: warning\n"
	require.NoError(t, os.WriteFile(w.cfg.RulesPath, []byte(one), 0o600))
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return len(app.tenants[0].rules.Rules().Rules) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.NotEqual(t, 1, before)
	require.Contains(t, logs.String(), `"msg":"threshold rules reloaded"`)

	require.NoError(t, os.WriteFile(w.cfg.RulesPath, []byte("rules: [\n"), 0o600))
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `"msg":"reload threshold rules; the previous rules stay in force"`)
	}, 5*time.Second, 10*time.Millisecond)
	require.Len(t, app.tenants[0].rules.Rules().Rules, 1)
	require.NoError(t, stop())
}

// TestForwardSignalsCollapses: signals that arrive while a reload waits
// collapse into it; the handler never blocks, and ends with its context.
func TestForwardSignalsCollapses(t *testing.T) {
	hup := make(chan os.Signal)
	reloads := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- forwardSignals(ctx, hup, reloads) }()
	for range 5 {
		hup <- syscall.SIGHUP // unbuffered: each is taken by the handler
	}
	require.Len(t, reloads, 1, "five signals, one reload waiting")
	<-reloads
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return len(reloads) == 1 }, time.Second, time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the signal handler did not end with its context")
	}
}
