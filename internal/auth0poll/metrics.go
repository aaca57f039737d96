package auth0poll

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/metrics"
)

// Reasons of authpipe_auth0_page_errors_total{reason}.
const (
	reasonDecode = "decode" // a page that is not valid JSON, or an event that does not decode
	reasonHTTP   = "http"   // an error status other than 429, or no response
	reasonToken  = "token"  // the token endpoint failed
	reasonBuffer = "buffer" // the buffer failed to read the checkpoint, report its fill or append
)

var pageErrorReasons = []string{reasonDecode, reasonHTTP, reasonToken, reasonBuffer}

// outcomes are the values of authpipe_auth0_events_by_outcome_total{outcome}:
// the outcome of a log's type in Auth0's type table (unknown types are info).
var outcomes = []auth0log.Outcome{auth0log.Success, auth0log.Failure, auth0log.Info}

// pollMetrics are one tenant's poll metrics.
type pollMetrics struct {
	polled      prometheus.Counter
	byOutcome   map[auth0log.Outcome]prometheus.Counter
	requests    map[string]prometheus.Counter
	gaps        prometheus.Counter
	remaining   prometheus.Gauge
	refill      prometheus.Gauge
	pageErrors  map[string]prometheus.Counter
	lastSuccess prometheus.Gauge
	paused      prometheus.Gauge
	lag         prometheus.GaugeFunc
	stage       metrics.Stage
}

// newPollMetrics registers the families on reg (or reuses them when another
// tenant's poller registered them first) and creates every series of the
// tenant at zero. lag is the checkpoint-lag function of this poller; cfg
// (defaults applied) gives the tenant and the settings exported as gauges.
func newPollMetrics(reg prometheus.Registerer, stages *metrics.Stages, cfg Config, lag func() float64) (*pollMetrics, error) {
	tenant := cfg.Tenant
	var errs []error
	counterVec := func(name, help string, labels ...string) *prometheus.CounterVec {
		v, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
		errs = append(errs, err)
		return v
	}
	gaugeVec := func(name, help string) *prometheus.GaugeVec {
		v, err := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"tenant"}))
		errs = append(errs, err)
		return v
	}

	polled := counterVec("authpipe_auth0_events_polled_total",
		"Auth0 log events committed to the buffer together with the checkpoint that follows them.", "tenant")
	requests := counterVec("authpipe_auth0_requests_total",
		"Requests to the Auth0 logs API (each attempt) by response class; error = no response.", "tenant", "code")
	gaps := counterVec("authpipe_auth0_gaps_total",
		"Times the checkpoint fell behind Auth0's log retention: logs in between were deleted before they were polled.", "tenant")
	pageErrors := counterVec("authpipe_auth0_page_errors_total",
		"Failed attempts to fetch, decode or buffer a page of Auth0 logs, by reason; the page is fetched again.", "tenant", "reason")
	byOutcome := counterVec("authpipe_auth0_events_by_outcome_total",
		"Auth0 log events committed to the buffer, by the outcome of their type (success, failure, info; unknown types count as info).", "tenant", "outcome")
	retention := gaugeVec("authpipe_auth0_log_retention_seconds",
		"How long Auth0 keeps logs (AUTH0_LOG_RETENTION): the checkpoint lag must stay well below it.")
	remaining := gaugeVec("authpipe_auth0_rate_limit_remaining",
		"x-ratelimit-remaining of the last Auth0 logs API response.")
	share := gaugeVec("authpipe_auth0_rate_limit_share",
		"Largest share of the tenant's Auth0 logs rate limit the poller uses (AUTH0_RATE_LIMIT_SHARE); the rest is left to other Management API clients.")
	refill := gaugeVec("authpipe_auth0_rate_limit_refill_per_second",
		"Measured refill rate of the tenant's Auth0 logs rate-limit bucket (a lower bound), in requests per second; "+
			"the poller paces itself to the share of it. 0 until the bucket has run low while polling.")
	lagRatio := gaugeVec("authpipe_auth0_lag_alert_ratio",
		"Share of the log retention the checkpoint lag may reach before AuthpipeCheckpointLagHigh fires (AUTHPIPE_LAG_ALERT_RATIO).")
	lastSuccess := gaugeVec("authpipe_auth0_last_success_timestamp_seconds",
		"When the Auth0 logs API last answered a request with a page that decoded.")
	paused := gaugeVec("authpipe_auth0_paused",
		"1 while polling is paused because the buffer is full (Auth0 keeps the logs meanwhile).")

	lagFunc := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "authpipe_auth0_checkpoint_lag_seconds",
		Help: "Age of the newest point up to which every Auth0 log is known to be buffered: " +
			"now minus the later of the checkpoint's time and the last poll that found no more logs. 0 until the checkpoint is read.",
		ConstLabels: prometheus.Labels{"tenant": tenant},
	}, lag)
	if err := reg.Register(lagFunc); err != nil {
		errs = append(errs, fmt.Errorf("register lag gauge of tenant %q (one poller per tenant and registry): %w", tenant, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	m := &pollMetrics{
		polled:      polled.WithLabelValues(tenant),
		byOutcome:   map[auth0log.Outcome]prometheus.Counter{},
		requests:    map[string]prometheus.Counter{},
		gaps:        gaps.WithLabelValues(tenant),
		remaining:   remaining.WithLabelValues(tenant),
		refill:      refill.WithLabelValues(tenant),
		pageErrors:  map[string]prometheus.Counter{},
		lastSuccess: lastSuccess.WithLabelValues(tenant),
		paused:      paused.WithLabelValues(tenant),
		lag:         lagFunc,
		stage:       stages.For(metrics.StagePoll, tenant),
	}
	for _, c := range codeClasses {
		m.requests[c] = requests.WithLabelValues(tenant, c)
	}
	for _, r := range pageErrorReasons {
		m.pageErrors[r] = pageErrors.WithLabelValues(tenant, r)
	}
	for _, o := range outcomes {
		m.byOutcome[o] = byOutcome.WithLabelValues(tenant, string(o))
	}
	retention.WithLabelValues(tenant).Set(cfg.Retention.Seconds())
	lagRatio.WithLabelValues(tenant).Set(cfg.LagAlertRatio)
	share.WithLabelValues(tenant).Set(cfg.RateLimitShare)
	return m, nil
}

// register registers c, or returns the equal collector registered before
// (another tenant's poller on the same registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register metrics: %w", err)
}

// countOutcomes counts committed logs by the outcome of their type.
func (m *pollMetrics) countOutcomes(logs []auth0log.Log) {
	counts := make(map[auth0log.Outcome]int, len(outcomes))
	for _, l := range logs {
		info, _ := auth0log.LookupType(l.Type)
		if _, ok := m.byOutcome[info.Outcome]; !ok {
			info.Outcome = auth0log.Info
		}
		counts[info.Outcome]++
	}
	for o, n := range counts {
		m.byOutcome[o].Add(float64(n))
	}
}
