package auth0poll

import (
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
	added       prometheus.Counter
	interval    prometheus.Gauge
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

// newPollMetrics registers the poller's metrics on reg and creates every
// series at zero. reg is the tenant's: the caller adds the tenant label
// (metrics.Tenant), so the pollers of several tenants share
// a registry, each through its own registerer. lag is the checkpoint-lag
// function of this poller; cfg (defaults applied) gives the settings
// exported as gauges.
func newPollMetrics(reg prometheus.Registerer, stages *metrics.Stages, cfg Config, lag func() float64) (*pollMetrics, error) {
	r := metrics.NewRegistrar(reg)
	counter, counterVec, gauge := r.Counter, r.CounterVec, r.Gauge

	m := &pollMetrics{
		polled: counter("authpipe_auth0_events_polled_total",
			"Auth0 log events committed to the buffer together with the checkpoint that follows them."),
		added: counter("authpipe_auth0_events_first_total",
			"Polled Auth0 log events the buffer did not hold yet: the poller delivered them first (with a Log Stream, those the stream had not pushed)."),
		interval: gauge("authpipe_auth0_poll_interval_seconds",
			"Wait between polls that find Auth0 caught up: AUTH0_POLL_INTERVAL, or AUTHPIPE_STREAM_POLL_INTERVAL while the Log Stream is healthy."),
		gaps: counter("authpipe_auth0_gaps_total",
			"Times the checkpoint fell behind Auth0's log retention: logs in between were deleted before they were polled."),
		remaining: gauge("authpipe_auth0_rate_limit_remaining",
			"x-ratelimit-remaining of the last Auth0 logs API response."),
		refill: gauge("authpipe_auth0_rate_limit_refill_per_second",
			"Measured refill rate of the tenant's Auth0 logs rate-limit bucket (a lower bound), in requests per second; "+
				"the poller paces itself to the share of it. 0 until the bucket has run low while polling."),
		lastSuccess: gauge("authpipe_auth0_last_success_timestamp_seconds",
			"When the Auth0 logs API last answered a request with a page that decoded."),
		paused: gauge("authpipe_auth0_paused",
			"1 while polling is paused because the buffer is full (Auth0 keeps the logs meanwhile)."),
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "authpipe_auth0_checkpoint_lag_seconds",
			Help: "Age of the newest point up to which every Auth0 log is known to be buffered: " +
				"now minus the later of the checkpoint's time and the last poll that found no more logs. 0 until the checkpoint is read.",
		}, lag),
		byOutcome:  map[auth0log.Outcome]prometheus.Counter{},
		requests:   map[string]prometheus.Counter{},
		pageErrors: map[string]prometheus.Counter{},
		stage:      stages.For(metrics.StagePoll),
	}
	r.Register(m.lag)
	requests := counterVec("authpipe_auth0_requests_total",
		"Requests to the Auth0 logs API (each attempt) by response class; error = no response.", "code")
	pageErrors := counterVec("authpipe_auth0_page_errors_total",
		"Failed attempts to fetch, decode or buffer a page of Auth0 logs, by reason; the page is fetched again.", "reason")
	byOutcome := counterVec("authpipe_auth0_events_by_outcome_total",
		"Auth0 log events committed to the buffer, by the outcome of their type (success, failure, info; unknown types count as info).", "outcome")
	gauge("authpipe_auth0_log_retention_seconds",
		"How long Auth0 keeps logs (AUTH0_LOG_RETENTION): the checkpoint lag must stay well below it.").Set(cfg.Retention.Seconds())
	gauge("authpipe_auth0_rate_limit_share",
		"Largest share of the tenant's Auth0 logs rate limit the poller uses (AUTH0_RATE_LIMIT_SHARE); the rest is left to other Management API clients.").Set(cfg.RateLimitShare)
	gauge("authpipe_auth0_lag_alert_ratio",
		"Share of the log retention the checkpoint lag may reach before AuthpipeCheckpointLagHigh fires (AUTHPIPE_LAG_ALERT_RATIO).").Set(cfg.LagAlertRatio)
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("register poll metrics (one poller per registerer: give each tenant's its own): %w", err)
	}
	for _, c := range codeClasses {
		m.requests[c] = requests.WithLabelValues(c)
	}
	for _, r := range pageErrorReasons {
		m.pageErrors[r] = pageErrors.WithLabelValues(r)
	}
	for _, o := range outcomes {
		m.byOutcome[o] = byOutcome.WithLabelValues(string(o))
	}
	m.interval.Set(cfg.PollInterval.Seconds())
	return m, nil
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
