package status

import (
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/metrics"
)

const retention = 144 * time.Hour

// fixture is a registry with the families the page reads, registered with
// the same types and labels as the packages that own them.
type fixture struct {
	reg      *prometheus.Registry
	stages   map[string]*metrics.Stages // by tenant, each on the tenant's registerer as package pipeline makes it
	polled   *prometheus.CounterVec
	fwdAcked *prometheus.CounterVec
	gaps     *prometheus.CounterVec
	backlog  *prometheus.GaugeVec
	pending  *prometheus.GaugeVec
	dead     *prometheus.GaugeVec
	value    *prometheus.GaugeVec
	breached *prometheus.GaugeVec
	reloadOK prometheus.Gauge
	ready    prometheus.Gauge

	mu  sync.Mutex
	lag map[string]float64
}

func newFixture(t *testing.T, tenants ...string) *fixture {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	f := promauto.With(reg)
	x := &fixture{
		reg:    reg,
		stages: map[string]*metrics.Stages{},
		polled: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_auth0_events_polled_total", Help: "h"}, []string{"tenant"}),
		fwdAcked: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_forward_events_acked_total", Help: "h"},
			[]string{"tenant"}),
		gaps:     f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_auth0_gaps_total", Help: "h"}, []string{"tenant"}),
		backlog:  f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_backlog_events", Help: "h"}, []string{"tenant"}),
		pending:  f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_pending_events", Help: "h"}, []string{"tenant"}),
		dead:     f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_dead_letter_events", Help: "h"}, []string{"tenant"}),
		value:    f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_value", Help: "h"}, []string{"rule"}),
		breached: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_breached", Help: "h"}, []string{"rule"}),
		reloadOK: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_rules_last_reload_successful", Help: "h"}),
		ready:    f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_ready", Help: "h"}),
		lag:      map[string]float64{},
	}
	f.NewGauge(prometheus.GaugeOpts{
		Name:        "authpipe_build_info",
		Help:        "h",
		ConstLabels: prometheus.Labels{"version": "v1.2.3", "revision": "abc1234", "goversion": "go1.26.0"},
	}).Set(1)
	for _, tenant := range tenants {
		// The poller's lag is a GaugeFunc with a const tenant label.
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "authpipe_auth0_checkpoint_lag_seconds",
			Help:        "h",
			ConstLabels: prometheus.Labels{"tenant": tenant},
		}, func() float64 {
			x.mu.Lock()
			defer x.mu.Unlock()
			return x.lag[tenant]
		})
		x.stages[tenant] = metrics.NewStages(metrics.Tenant(reg, tenant))
		for _, st := range []string{metrics.StagePoll, metrics.StageBuffer, metrics.StageForward} {
			x.stages[tenant].For(st)
		}
		x.polled.WithLabelValues(tenant)
		x.fwdAcked.WithLabelValues(tenant)
		x.gaps.WithLabelValues(tenant)
		x.backlog.WithLabelValues(tenant)
		x.pending.WithLabelValues(tenant)
		x.dead.WithLabelValues(tenant)
	}
	return x
}

func (x *fixture) setLag(tenant string, secs float64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.lag[tenant] = secs
}

// setStage adds to one stage's four counters.
func (x *fixture) setStage(stage, tenant string, received, written, acked, failed float64) {
	s := x.stages[tenant].For(stage)
	s.Received.Add(received)
	s.Written.Add(written)
	s.Acked.Add(acked)
	s.Failed.Add(failed)
}

// populate gives tenant "acme" a busy pipeline and two rules, one breached.
func (x *fixture) populate() {
	x.setStage(metrics.StagePoll, "acme", 1200, 1100, 1100, 100)
	x.setStage(metrics.StageBuffer, "acme", 1100, 1050, 1000, 3)
	x.setStage(metrics.StageForward, "acme", 1010, 1005, 990, 15)
	x.polled.WithLabelValues("acme").Add(1100)
	x.fwdAcked.WithLabelValues("acme").Add(990)
	x.backlog.WithLabelValues("acme").Set(47)
	x.pending.WithLabelValues("acme").Set(12)
	x.dead.WithLabelValues("acme").Set(3)
	x.gaps.WithLabelValues("acme").Add(1)
	x.setLag("acme", 0.6*retention.Seconds()) // 60 %
	x.value.WithLabelValues("FailedLoginsPerIP").Set(42)
	x.breached.WithLabelValues("FailedLoginsPerIP").Set(1)
	x.value.WithLabelValues("SignupSpike").Set(3)
	x.breached.WithLabelValues("SignupSpike").Set(0)
	x.reloadOK.Set(1)
	x.ready.Set(1)
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// stageRow returns the cells of the stage's row in the page, as text.
func stageRow(t *testing.T, page, stage string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?s)<tr>\s*<td><strong>` + stage + `</strong>.*?</tr>`)
	row := re.FindString(page)
	require.NotEmpty(t, row, "row of stage %s", stage)
	var cells []string
	for _, m := range regexp.MustCompile(`(?s)<td[^>]*>(.*?)</td>`).FindAllStringSubmatch(row, -1) {
		text := regexp.MustCompile(`<[^>]+>`).ReplaceAllString(m[1], "")
		cells = append(cells, html.UnescapeString(strings.TrimSpace(text)))
	}
	return cells
}

func TestPage(t *testing.T) {
	x := newFixture(t, "acme")
	x.populate()
	clock := newClock()
	srv := httptest.NewServer(NewHandler(x.reg, Options{Title: "authpipe test", Retention: retention, Clock: clock.Now}))
	t.Cleanup(srv.Close)

	resp, page := get(t, srv, http.MethodGet, "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))

	t.Run("refreshes itself without JavaScript", func(t *testing.T) {
		require.Contains(t, page, `<meta http-equiv="refresh" content="2">`)
		require.Contains(t, page, "reloads itself every 2 seconds")
		require.NotContains(t, page, "<script")
	})
	t.Run("header", func(t *testing.T) {
		require.Contains(t, page, "<title>authpipe test</title>")
		require.Contains(t, page, "v1.2.3")
		require.Contains(t, page, "abc1234")
		require.Contains(t, page, `<span class="pill good">ready</span>`)
		require.Contains(t, page, "2025-03-01 12:00:00 UTC")
		require.Contains(t, page, "Tenant acme")
	})
	t.Run("stage counters", func(t *testing.T) {
		for _, tt := range []struct {
			stage string
			want  []string
		}{
			{"poll", []string{"poll (from Auth0)", "1,200", "1,100", "1,100", "100", "–"}},
			{"buffer", []string{"buffer (durable store)", "1,100", "1,050", "1,000", "3", "–"}},
			{"forward", []string{"forward (to Segment)", "1,010", "1,005", "990", "15", "–"}},
		} {
			require.Equal(t, tt.want, stageRow(t, page, tt.stage), tt.stage)
		}
		require.Less(t, strings.Index(page, "<strong>poll</strong>"), strings.Index(page, "<strong>buffer</strong>"))
		require.Less(t, strings.Index(page, "<strong>buffer</strong>"), strings.Index(page, "<strong>forward</strong>"))
		require.Contains(t, page, "passed on to the next step")
		require.Contains(t, page, "Rates appear from the next reload.")
	})
	t.Run("checkpoint lag against retention", func(t *testing.T) {
		require.Contains(t, page, `<div class="lag warn">`)
		require.Contains(t, page, "<strong>3d 14h</strong> behind, of Auth0's 6d 0h log retention: <strong>60.0%</strong>")
		require.Contains(t, page, `<span class="warn" style="width: 60.0%"></span>`)
	})
	t.Run("figures red when something was lost", func(t *testing.T) {
		require.Contains(t, page, `<dt>backlog</dt><dd>47</dd>`)
		require.Contains(t, page, `<dt>pending</dt><dd>12</dd>`)
		require.Contains(t, page, `<dt>dead letters</dt><dd class="red">3</dd>`)
		require.Contains(t, page, `<dt>gaps</dt><dd class="red">1</dd>`)
	})
	t.Run("rules", func(t *testing.T) {
		require.Contains(t, page, `<tr class="breached"><td>FailedLoginsPerIP</td><td class="num">42</td><td>BREACHED</td></tr>`)
		require.Contains(t, page, `<tr><td>SignupSpike</td><td class="num">3</td><td>ok</td></tr>`)
		require.Contains(t, page, "1 of 2 rules breached")
		require.Contains(t, page, "last reload ok")
	})
}

func TestPageRates(t *testing.T) {
	x := newFixture(t, "acme")
	x.populate()
	clock := newClock()
	srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention, Clock: clock.Now}))
	t.Cleanup(srv.Close)

	_, first := get(t, srv, http.MethodGet, "/")
	require.Equal(t, "–", stageRow(t, first, "forward")[5])

	// A HEAD (a probe) neither shows nor moves the rates.
	clock.Advance(500 * time.Millisecond)
	resp, _ := get(t, srv, http.MethodHead, "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	clock.Advance(1500 * time.Millisecond)
	x.setStage(metrics.StagePoll, "acme", 200, 200, 200, 0)
	x.setStage(metrics.StageBuffer, "acme", 200, 200, 100, 0)
	x.setStage(metrics.StageForward, "acme", 110, 110, 50, 5)

	_, second := get(t, srv, http.MethodGet, "/")
	require.Equal(t, "100.0/s", stageRow(t, second, "poll")[5])
	require.Equal(t, "50.0/s", stageRow(t, second, "buffer")[5])
	require.Equal(t, "25.0/s", stageRow(t, second, "forward")[5])
	require.Equal(t, "1,040", stageRow(t, second, "forward")[3])
	require.Contains(t, second, "Rates are measured over the last 2.0s.")

	// A view sooner than a second later shows the same rates, not noise.
	clock.Advance(100 * time.Millisecond)
	x.setStage(metrics.StageForward, "acme", 0, 0, 100, 0)
	_, third := get(t, srv, http.MethodGet, "/")
	require.Equal(t, "25.0/s", stageRow(t, third, "forward")[5])

	// Measured from the second view: 100 events in 1.1 s.
	clock.Advance(time.Second)
	_, fourth := get(t, srv, http.MethodGet, "/")
	require.Equal(t, "90.9/s", stageRow(t, fourth, "forward")[5])
	require.Equal(t, "0.0/s", stageRow(t, fourth, "poll")[5])

	// After a long pause the rates start afresh.
	clock.Advance(5 * time.Minute)
	_, fifth := get(t, srv, http.MethodGet, "/")
	require.Equal(t, "–", stageRow(t, fifth, "forward")[5])
}

func TestPageStates(t *testing.T) {
	t.Run("lag past retention, not ready, failed reload", func(t *testing.T) {
		x := newFixture(t, "acme")
		x.setLag("acme", 7*24*3600)
		x.ready.Set(0)
		x.reloadOK.Set(0)
		srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention}))
		t.Cleanup(srv.Close)
		_, page := get(t, srv, http.MethodGet, "/")
		require.Contains(t, page, `<div class="lag crit">`)
		require.Contains(t, page, "<strong>116.7%</strong>")
		require.Contains(t, page, `style="width: 100.0%"`)
		require.Contains(t, page, `<span class="pill bad">not ready</span>`)
		require.Contains(t, page, "last reload failed")
		require.Contains(t, page, "No threshold rules loaded.")
		require.Contains(t, page, `<dt>gaps</dt><dd>0</dd>`)
		require.Contains(t, page, `<dt>dead letters</dt><dd>0</dd>`)
	})
	t.Run("low lag", func(t *testing.T) {
		x := newFixture(t, "acme")
		x.setLag("acme", 192)
		srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention}))
		t.Cleanup(srv.Close)
		_, page := get(t, srv, http.MethodGet, "/")
		require.Contains(t, page, `<div class="lag ok">`)
		require.Contains(t, page, "<strong>3m 12s</strong> behind")
		require.Contains(t, page, "<strong>0.0%</strong>")
	})
	t.Run("no retention configured", func(t *testing.T) {
		x := newFixture(t, "acme")
		x.setLag("acme", 90)
		srv := httptest.NewServer(NewHandler(x.reg, Options{}))
		t.Cleanup(srv.Close)
		_, page := get(t, srv, http.MethodGet, "/")
		require.Contains(t, page, "<strong>1m 30s</strong> behind (retention not configured")
		require.NotContains(t, page, `class="bar"`)
		require.Contains(t, page, "<title>authpipe</title>")
	})
	t.Run("empty registry", func(t *testing.T) {
		srv := httptest.NewServer(NewHandler(prometheus.NewRegistry(), Options{}))
		t.Cleanup(srv.Close)
		resp, page := get(t, srv, http.MethodGet, "/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, page, "No tenant metrics yet.")
		require.Contains(t, page, "readiness unknown")
		require.Contains(t, page, "No threshold rules loaded.")
		require.NotContains(t, page, "last reload")
	})
	t.Run("label values are escaped", func(t *testing.T) {
		x := newFixture(t, `<b>"t"</b>`)
		x.value.WithLabelValues(`<script>alert(1)</script>`).Set(1)
		srv := httptest.NewServer(NewHandler(x.reg, Options{Title: "<i>x</i>"}))
		t.Cleanup(srv.Close)
		_, page := get(t, srv, http.MethodGet, "/")
		require.NotContains(t, page, "<script>")
		require.NotContains(t, page, "<b>")
		require.NotContains(t, page, "<i>x</i>")
		require.Contains(t, page, "&lt;script&gt;alert(1)&lt;/script&gt;")
		require.Contains(t, page, "Tenant &lt;b&gt;&#34;t&#34;&lt;/b&gt;")
	})
	t.Run("gather error shows what could be read", func(t *testing.T) {
		x := newFixture(t, "acme")
		x.populate()
		g := prometheus.Gatherers{x.reg, failingGatherer{}}
		srv := httptest.NewServer(NewHandler(g, Options{}))
		t.Cleanup(srv.Close)
		resp, page := get(t, srv, http.MethodGet, "/")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, page, `<p class="error" role="alert">Some metrics could not be read`)
		require.Contains(t, page, "redis down")
		require.Equal(t, "1,200", stageRow(t, page, "poll")[1])
	})
}

type failingGatherer struct{}

func (failingGatherer) Gather() ([]*dto.MetricFamily, error) { return nil, errors.New("redis down") }

func TestRouting(t *testing.T) {
	x := newFixture(t, "acme")
	srv := httptest.NewServer(NewHandler(x.reg, Options{}))
	t.Cleanup(srv.Close)

	for _, tt := range []struct {
		name, method, path string
		want               int
		allow              string
	}{
		{name: "get", method: http.MethodGet, path: "/", want: http.StatusOK},
		{name: "head", method: http.MethodHead, path: "/", want: http.StatusOK},
		{name: "other path", method: http.MethodGet, path: "/status", want: http.StatusNotFound},
		{name: "metrics is not ours", method: http.MethodGet, path: "/metrics", want: http.StatusNotFound},
		{name: "post", method: http.MethodPost, path: "/", want: http.StatusMethodNotAllowed, allow: "GET, HEAD"},
		{name: "delete", method: http.MethodDelete, path: "/", want: http.StatusMethodNotAllowed, allow: "GET, HEAD"},
		{name: "post elsewhere", method: http.MethodPost, path: "/x", want: http.StatusNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, srv, tt.method, tt.path)
			require.Equal(t, tt.want, resp.StatusCode)
			require.Equal(t, tt.allow, resp.Header.Get("Allow"))
			if tt.method == http.MethodHead {
				require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
				require.Empty(t, body)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	x := newFixture(t, "zeta", "acme")
	x.populate()
	x.setStage(metrics.StageForward, "zeta", 5, 4, 3, 1)
	x.setLag("zeta", 30)

	s, err := Snapshot(x.reg)
	require.NoError(t, err)
	require.Equal(t, "v1.2.3", s.Version)
	require.Equal(t, "abc1234", s.Revision)
	require.Equal(t, "go1.26.0", s.GoVersion)
	require.True(t, s.Ready)
	require.True(t, s.ReadyKnown)
	require.True(t, s.ReloadOK)
	require.True(t, s.ReloadKnown)
	require.Zero(t, s.RateInterval)
	require.Equal(t, []Rule{
		{Name: "FailedLoginsPerIP", Value: 42, Breached: true},
		{Name: "SignupSpike", Value: 3},
	}, s.Rules)

	require.Len(t, s.Tenants, 2)
	require.Equal(t, Tenant{
		Name: "acme",
		Stages: []Stage{
			{Name: "poll", Received: 1200, Written: 1100, Acked: 1100, Failed: 100},
			{Name: "buffer", Received: 1100, Written: 1050, Acked: 1000, Failed: 3},
			{Name: "forward", Received: 1010, Written: 1005, Acked: 990, Failed: 15},
		},
		CheckpointLagSeconds: 0.6 * retention.Seconds(),
		Backlog:              47,
		Pending:              12,
		DeadLetters:          3,
		Gaps:                 1,
		Polled:               1100,
		Acked:                990,
	}, s.Tenants[0])
	require.Equal(t, "zeta", s.Tenants[1].Name)
	require.Equal(t, Stage{Name: "forward", Received: 5, Written: 4, Acked: 3, Failed: 1}, s.Tenants[1].Stages[2])
	require.Equal(t, 30.0, s.Tenants[1].CheckpointLagSeconds)

	_, ok := s.Tenants[0].LagPercent()
	require.False(t, ok, "no metric carries the retention")
	s.Tenants[0].RetentionSeconds = retention.Seconds()
	pct, ok := s.Tenants[0].LagPercent()
	require.True(t, ok)
	require.InDelta(t, 60.0, pct, 1e-9)

	t.Run("rates", func(t *testing.T) {
		x.setStage(metrics.StageBuffer, "acme", 0, 0, 40, 0)
		next, err := Snapshot(x.reg)
		require.NoError(t, err)
		next.SetRates(s, 4*time.Second)
		require.Equal(t, 4*time.Second, next.RateInterval)
		require.Equal(t, 10.0, next.Tenants[0].Stages[1].RatePerSec)
		require.Equal(t, 0.0, next.Tenants[0].Stages[0].RatePerSec)

		// A counter that went down was reset: it counts from 0.
		reset, err := Snapshot(newFixture(t, "acme").reg)
		require.NoError(t, err)
		reset.Tenants[0].Stages[2].Acked = 8
		reset.SetRates(s, 2*time.Second)
		require.Equal(t, 4.0, reset.Tenants[0].Stages[2].RatePerSec)
	})
	t.Run("missing metrics are absent", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		stages := metrics.NewStages(metrics.Tenant(reg, "solo"))
		stages.For(metrics.StageForward).Acked.Add(2)
		s, err := Snapshot(reg)
		require.NoError(t, err)
		require.Empty(t, s.Rules)
		require.False(t, s.ReloadKnown)
		require.False(t, s.ReadyKnown)
		require.Empty(t, s.Version)
		require.Equal(t, []Tenant{{Name: "solo", Stages: []Stage{{Name: "forward", Acked: 2}}}}, s.Tenants)
	})
	t.Run("gather error returns what was read", func(t *testing.T) {
		s, err := Snapshot(prometheus.Gatherers{x.reg, failingGatherer{}})
		require.ErrorContains(t, err, "redis down")
		require.Len(t, s.Tenants, 2)
	})
}

func TestConcurrentViews(t *testing.T) {
	x := newFixture(t, "acme")
	x.populate()
	clock := newClock()
	h := NewHandler(x.reg, Options{Retention: retention, Clock: clock.Now})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				clock.Advance(300 * time.Millisecond)
				x.setStage(metrics.StagePoll, "acme", 1, 1, 1, 0)
				rec := httptest.NewRecorder()
				method := http.MethodGet
				if i%4 == 0 {
					method = http.MethodHead
				}
				h.ServeHTTP(rec, httptest.NewRequest(method, "/", nil))
				assert.Equal(t, http.StatusOK, rec.Code)
			}
		})
	}
	wg.Wait()
}

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {1234567, "1,234,567"}, {-4200, "-4,200"}, {0.25, "0.25"}, {1.5e20, "1.5e+20"},
	} {
		require.Equal(t, tt.want, formatNumber(tt.in), tt.in)
	}
	for _, tt := range []struct {
		in   float64
		fine bool
		want string
	}{
		{0, false, "0s"}, {45, false, "45s"}, {192, false, "3m 12s"}, {3600, false, "1h 0m"}, {518400, false, "6d 0h"},
		{1.5, true, "1.5s"}, {90, true, "1m 30s"},
	} {
		require.Equal(t, tt.want, formatSeconds(tt.in, tt.fine), tt.in)
	}
}

// dataLossMetrics registers the buffer's data-loss families for tenant as
// package buffer does (constant tenant label, series at 0).
type dataLossMetrics struct {
	total           prometheus.Counter
	at, from, until prometheus.Gauge
	found           *prometheus.GaugeVec
}

func newDataLossMetrics(reg prometheus.Registerer, tenant string) dataLossMetrics {
	f := promauto.With(reg)
	tl := prometheus.Labels{"tenant": tenant}
	m := dataLossMetrics{
		total: f.NewCounter(prometheus.CounterOpts{Name: "authpipe_buffer_data_loss_total", Help: "h", ConstLabels: tl}),
		at:    f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_buffer_data_loss_last_timestamp_seconds", Help: "h", ConstLabels: tl}),
		found: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_data_loss_found", Help: "h", ConstLabels: tl}, []string{"what"}),
		from:  f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_buffer_data_loss_repoll_from_timestamp_seconds", Help: "h", ConstLabels: tl}),
		until: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_buffer_data_loss_repoll_until_timestamp_seconds", Help: "h", ConstLabels: tl}),
	}
	for _, k := range []string{"checkpoint", "stream", "consumer_group", "dedupe_record", "fencing_token", "buffer_file"} {
		m.found.WithLabelValues(k)
	}
	return m
}

func TestPageShowsTheLastDataLoss(t *testing.T) {
	x := newFixture(t, "acme", "quiet")
	x.populate()
	acme := newDataLossMetrics(x.reg, "acme")
	newDataLossMetrics(x.reg, "quiet")
	srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention, Clock: newClock().Now}))
	t.Cleanup(srv.Close)

	_, page := get(t, srv, http.MethodGet, "/")
	require.Contains(t, page, `<dt>buffer data loss</dt><dd>0</dd>`)
	require.NotContains(t, page, "The buffer lost data")
	s, err := Snapshot(x.reg)
	require.NoError(t, err)
	for _, tn := range s.Tenants {
		require.Nil(t, tn.DataLoss, "tenant %s: series at 0 are no incident", tn.Name)
	}

	at := time.Date(2025, 3, 1, 11, 58, 0, 0, time.UTC)
	acme.total.Inc()
	acme.at.Set(float64(at.Unix()))
	acme.found.WithLabelValues("checkpoint").Set(1)
	acme.found.WithLabelValues("stream").Set(1)
	acme.found.WithLabelValues("consumer_group").Set(1)
	acme.from.Set(float64(at.Add(-5 * time.Minute).Unix()))
	acme.until.Set(float64(at.Add(-10 * time.Second).Unix()))

	_, page = get(t, srv, http.MethodGet, "/")
	require.Contains(t, page, `<dt>buffer data loss</dt><dd class="red">1</dd>`)
	require.Contains(t, page, "The buffer lost data at 2025-03-01 11:58:00 UTC: found missing or gone backwards: checkpoint, consumer_group, stream.")
	require.Contains(t, page, "Polled again from Auth0: from 2025-03-01 11:53:00 UTC to 2025-03-01 11:57:50 UTC")
	require.Equal(t, 1, strings.Count(page, "The buffer lost data"), "only the tenant that lost data")

	s, err = Snapshot(x.reg)
	require.NoError(t, err)
	var got *DataLoss
	for _, tn := range s.Tenants {
		if tn.Name == "acme" {
			got = tn.DataLoss
		}
	}
	require.Equal(t, &DataLoss{At: at, Found: []string{"checkpoint", "consumer_group", "stream"},
		RepollFrom: at.Add(-5 * time.Minute), RepollUntil: at.Add(-10 * time.Second)}, got)

	// Groups only: nothing polled again.
	acme.total.Inc()
	acme.found.Reset()
	acme.found.WithLabelValues("consumer_group").Set(1)
	acme.from.Set(0)
	acme.until.Set(0)
	_, page = get(t, srv, http.MethodGet, "/")
	require.Contains(t, page, "Nothing had to be polled again")
}

// TestPageShowsBothSources: with the Log Streams receiver on, the page
// shows what the stream and the poller each stored first, their shares,
// the stream's misses and its last delivery; without it, the poller's
// count and that the receiver is off.
func TestPageShowsBothSources(t *testing.T) {
	x := newFixture(t, "acme", "beta")
	x.populate()
	f := promauto.With(x.reg)
	first := f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_auth0_events_first_total", Help: "h"}, []string{"tenant"})
	events := f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_stream_events_total", Help: "h"}, []string{"tenant", "outcome"})
	last := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_stream_last_event_timestamp_seconds", Help: "h"}, []string{"tenant"})
	missed := f.NewCounter(prometheus.CounterOpts{Name: "authpipe_stream_missed_events_total", Help: "h",
		ConstLabels: prometheus.Labels{"tenant": "acme"}})
	first.WithLabelValues("acme").Add(50)
	first.WithLabelValues("beta").Add(7)
	events.WithLabelValues("acme", "new").Add(950)
	events.WithLabelValues("acme", "duplicate").Add(12)
	events.WithLabelValues("acme", "full").Add(3)
	clock := newClock()
	last.WithLabelValues("acme").Set(float64(clock.Now().Add(-90*time.Second).UnixNano()) / 1e9)
	missed.Add(4)
	srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention, Clock: clock.Now}))
	t.Cleanup(srv.Close)

	_, page := get(t, srv, http.MethodGet, "/")
	require.Contains(t, page, "Stored first by the <strong>Log Stream</strong> (pushed): 950 (95.0%) · by the <strong>poller</strong>: 50 (5.0%).")
	require.Contains(t, page, `Missed by the stream: <span class="warn">4</span> · last delivery: 1m 30s ago.`)
	require.Contains(t, page, "Stored first by the <strong>poller</strong>: 7. The Log Streams receiver is off")

	s, err := Snapshot(x.reg)
	require.NoError(t, err)
	for _, tn := range s.Tenants {
		switch tn.Name {
		case "acme":
			require.Equal(t, &Stream{First: 950, Duplicates: 12, Missed: 4, LastEvent: unix(float64(clock.Now().Add(-90*time.Second).UnixNano()) / 1e9)}, tn.Stream)
			sf, pf, ok := tn.FirstShares()
			require.True(t, ok)
			require.InDelta(t, 0.95, sf, 1e-9)
			require.InDelta(t, 0.05, pf, 1e-9)
		case "beta":
			require.Nil(t, tn.Stream)
			require.Equal(t, 7.0, tn.PolledFirst)
		}
	}
}

// TestPageRedisMemory: the page shows Redis' memory and the bytes per
// retained event (used_memory / log_ids in the dedupe records), and leaves
// the section out where Redis does not report its memory.
func TestPageRedisMemory(t *testing.T) {
	x := newFixture(t, "acme", "beta")
	x.populate()
	f := promauto.With(x.reg)
	dedupe := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_dedupe_entries", Help: "h"}, []string{"tenant"})
	stream := f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_buffer_stream_events", Help: "h"}, []string{"tenant"})
	dedupe.WithLabelValues("acme").Set(300_000)
	dedupe.WithLabelValues("beta").Set(100_000)
	stream.WithLabelValues("acme").Set(1_234)
	srv := httptest.NewServer(NewHandler(x.reg, Options{Retention: retention, Clock: newClock().Now}))
	t.Cleanup(srv.Close)

	_, page := get(t, srv, http.MethodGet, "/")
	require.NotContains(t, page, "Redis memory", "no memory metric: no section")
	require.Contains(t, page, "log_ids remembered")
	require.Contains(t, page, "300,000")
	require.Contains(t, page, "1,234")

	f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_buffer_redis_memory_bytes", Help: "h"}).Set(40 << 20)
	_, page = get(t, srv, http.MethodGet, "/")
	require.Contains(t, page, "<strong>40.0 MB</strong> used · <strong>105</strong> bytes per retained event")

	s, err := Snapshot(x.reg)
	require.NoError(t, err)
	b, ok := s.BytesPerRetainedEvent()
	require.True(t, ok)
	require.InDelta(t, float64(40<<20)/400_000, b, 1e-9)
}

// TestPageBufferFiles: with the embedded buffer, the page shows its files'
// size (summed over the tenants) and the bytes per retained event, read
// from the metrics real buffers register, with their tenant labels.
func TestPageBufferFiles(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	dir := t.TempDir()
	at := time.Now().UTC().Truncate(time.Second)
	var size, events float64
	for i, tenant := range []string{"acme", "beta"} {
		treg := metrics.Tenant(reg, tenant)
		b, err := buffer.OpenBolt(dir, buffer.Config{Tenant: tenant}, buffer.Deps{Registerer: treg, Stages: metrics.NewStages(treg)})
		require.NoError(t, err)
		t.Cleanup(func() { _ = b.Close() })
		var logs []auth0log.Log
		for seq := range 50 * (i + 1) {
			l, err := auth0log.Decode(fmt.Appendf(nil, `{"log_id":"900%s%039d","date":%q,"type":"s"}`,
				at.Format("20060102150405"), seq, at.Format(time.RFC3339)))
			require.NoError(t, err)
			logs = append(logs, l)
		}
		_, err = b.Append(t.Context(), logs, logs[len(logs)-1].ID)
		require.NoError(t, err)
		fi, err := os.Stat(b.Path())
		require.NoError(t, err)
		size += float64(fi.Size())
		events += float64(len(logs))
	}
	srv := httptest.NewServer(NewHandler(reg, Options{Retention: retention, Clock: newClock().Now}))
	t.Cleanup(srv.Close)

	_, page := get(t, srv, http.MethodGet, "/")
	require.NotContains(t, page, "Redis memory")
	require.Contains(t, page, fmt.Sprintf("<strong>%.1f MB</strong> on disk · <strong>%.0f</strong> bytes per retained event", size/(1<<20), size/events))
}
