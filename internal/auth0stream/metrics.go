package auth0stream

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a request: the outcome label of
// authpipe_stream_requests_total (each with its one status code) and, for
// the four that carry events, of authpipe_stream_events_total.
const (
	OutcomeNew              = "new"                // events: stored, first seen by this request
	OutcomeDuplicate        = "duplicate"          // events: already stored (polled, or pushed before); 200 all the same
	OutcomeOK               = "ok"                 // requests: 200, every record committed
	OutcomeUnauthorized     = "unauthorized"       // 401: wrong or missing Authorization
	OutcomeBadRequest       = "bad_request"        // 400: body or a record unusable; nothing stored
	OutcomeTooLarge         = "too_large"          // 413: body over MaxBodyBytes; nothing stored
	OutcomeFull             = "full"               // 503: the buffer is full (back-pressure); nothing stored
	OutcomeUnavailable      = "unavailable"        // 503: the buffer failed or did not answer in time
	OutcomeNotFound         = "not_found"          // 404: not a receiver path, or an unknown tenant
	OutcomeMethodNotAllowed = "method_not_allowed" // 405: not POST
)

// statusOf returns a request outcome's status code.
func statusOf(outcome string) int {
	switch outcome {
	case OutcomeUnauthorized:
		return http.StatusUnauthorized
	case OutcomeBadRequest:
		return http.StatusBadRequest
	case OutcomeTooLarge:
		return http.StatusRequestEntityTooLarge
	case OutcomeFull, OutcomeUnavailable:
		return http.StatusServiceUnavailable
	case OutcomeNotFound:
		return http.StatusNotFound
	case OutcomeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	}
	return http.StatusOK
}

// tenantOutcomes are the request outcomes of a known tenant's path.
var tenantOutcomes = []string{OutcomeOK, OutcomeUnauthorized, OutcomeBadRequest, OutcomeTooLarge,
	OutcomeFull, OutcomeUnavailable, OutcomeMethodNotAllowed}

// eventOutcomes are the outcomes of authpipe_stream_events_total. Events
// of a request answered 400 or 413 are not counted: its body did not
// yield them.
var eventOutcomes = []string{OutcomeNew, OutcomeDuplicate, OutcomeFull, OutcomeUnavailable}

// tenantMetrics are one tenant's series; the tenant label is added by the
// registerer they are registered on.
type tenantMetrics struct {
	requests  *prometheus.CounterVec
	events    *prometheus.CounterVec
	lastEvent prometheus.Gauge
}

// newRequests is the family of authpipe_stream_requests_total.
func newRequests() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "authpipe_stream_requests_total",
		Help: "Log Streams requests answered, by tenant, status code and outcome.",
	}, []string{"code", "outcome"})
}

// newTenantMetrics registers a tenant's series on reg, the tenant's
// registerer, every one at zero.
func newTenantMetrics(reg prometheus.Registerer) (*tenantMetrics, error) {
	m := &tenantMetrics{
		requests: newRequests(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_stream_events_total",
			Help: "Log events received by the Log Streams receiver, by outcome: new and duplicate were committed (200); full and unavailable were answered 503 for Auth0 to retry.",
		}, []string{"outcome"}),
		lastEvent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "authpipe_stream_last_event_timestamp_seconds",
			Help: "Time the receiver last committed a request with events (new or duplicate) for the tenant, Unix seconds; 0 until then.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.events, m.lastEvent} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register stream metrics: %w", err)
		}
	}
	for _, o := range tenantOutcomes {
		m.requests.WithLabelValues(code(o), o)
	}
	for _, o := range eventOutcomes {
		m.events.WithLabelValues(o)
	}
	return m, nil
}

// newUnrouted registers, on reg, the requests that reach no tenant (an
// unknown path or tenant name), with their one series at zero.
func newUnrouted(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	v := newRequests()
	if err := reg.Register(v); err != nil {
		return nil, fmt.Errorf("register stream metrics: %w", err)
	}
	v.WithLabelValues(code(OutcomeNotFound), OutcomeNotFound)
	return v, nil
}

// code is the status code of a request outcome, as a label value.
func code(outcome string) string { return strconv.Itoa(statusOf(outcome)) }
