package auth0poll

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

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

// pollMetrics are one tenant's poll metrics.
type pollMetrics struct {
	polled      prometheus.Counter
	requests    map[string]prometheus.Counter
	gaps        prometheus.Counter
	remaining   prometheus.Gauge
	pageErrors  map[string]prometheus.Counter
	lastSuccess prometheus.Gauge
	paused      prometheus.Gauge
	lag         prometheus.GaugeFunc
	stage       metrics.Stage
}

// newPollMetrics registers the families on reg (or reuses them when another
// tenant's poller registered them first) and creates every series of the
// tenant at zero. lag is the checkpoint-lag function of this poller.
func newPollMetrics(reg prometheus.Registerer, stages *metrics.Stages, tenant string, lag func() float64) (*pollMetrics, error) {
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
	remaining := gaugeVec("authpipe_auth0_rate_limit_remaining",
		"x-ratelimit-remaining of the last Auth0 logs API response.")
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
		requests:    map[string]prometheus.Counter{},
		gaps:        gaps.WithLabelValues(tenant),
		remaining:   remaining.WithLabelValues(tenant),
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
