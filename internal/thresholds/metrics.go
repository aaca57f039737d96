package thresholds

import (
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/thresholds/notify"
)

// Event outcomes: the result label of authpipe_threshold_events_total.
const (
	resultCounted   = "counted"   // counted for the rules it matches (maybe none)
	resultDuplicate = "duplicate" // redelivered after it had been counted: not counted again
	resultInvalid   = "invalid"   // not a decodable Auth0 log: acknowledged, not counted
)

var eventResults = []string{resultCounted, resultDuplicate, resultInvalid}

// Job statuses as gocron reports them: the status label of
// authpipe_threshold_job_runs_total.
var jobStatuses = []gocron.JobStatus{gocron.Success, gocron.Fail, gocron.Skip, gocron.SingletonRescheduled}

// engineMetrics are the metrics of one tenant's engine. The tenant label is
// added by the registerer the engine is given, so engines of several
// tenants share one registry. Rule names are the only other varying label values:
// group values (IPs, users) never become labels.
type engineMetrics struct {
	*notify.Metrics
	breached    *prometheus.GaugeVec
	value       *prometheus.GaugeVec
	checks      *prometheus.CounterVec
	checkErrors *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	jobRuns     *prometheus.CounterVec
	cut         *prometheus.CounterVec
	reloadOK    prometheus.Gauge
	reloadTime  prometheus.Gauge
	leader      prometheus.Gauge
	events      *prometheus.CounterVec
	realtime    prometheus.Counter
	lastCheck   *prometheus.GaugeVec
	countsLive  prometheus.Gauge
	newest      prometheus.Gauge
}

func newEngineMetrics(reg prometheus.Registerer) *engineMetrics {
	f := promauto.With(reg)
	rule := []string{"rule"}
	m := &engineMetrics{
		Metrics: notify.NewMetrics(reg),
		breached: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_breached",
			Help: "1 while a threshold rule is breached for at least one group (or has alerts held active while the counts are not live), " +
				"per this replica's last check; kept while the buffer does not answer (see authpipe_threshold_last_check_timestamp_seconds), " +
				"0 on replicas that never evaluated or handed over to another."}, rule),
		value: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_value",
			Help: "Highest value of a threshold rule among its groups at this replica's last check."}, rule),
		lastCheck: f.NewGaugeVec(prometheus.GaugeOpts{Name: "authpipe_threshold_last_check_timestamp_seconds",
			Help: "When this replica last completed a check of the rule (0: never): how old authpipe_threshold_breached and _value are."}, rule),
		countsLive: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_threshold_counts_live",
			Help: "1 when the threshold counts are complete up to about now; 0 after a buffer error or a start, until an event dated after it " +
				"has been counted (or the resolve hold passed). Alerts are not resolved while it is 0."}),
		newest: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_threshold_newest_event_timestamp_seconds",
			Help: "Date of the newest event this replica has counted (0: none yet)."}),
		checks: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_threshold_checks_total",
			Help: "Scheduled checks of a threshold rule run on this replica."}, rule),
		checkErrors: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_threshold_check_errors_total",
			Help: "Scheduled checks of a threshold rule that failed."}, rule),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{Name: "authpipe_threshold_check_duration_seconds",
			Help:    "Duration of scheduled checks of a threshold rule.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, rule),
		jobRuns: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_threshold_job_runs_total",
			Help: "Scheduler runs of a threshold rule's job by outcome (skip: another replica holds the lease; singleton_rescheduled: the previous check was still running)."},
			[]string{"rule", "status"}),
		cut: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_threshold_groups_cut_total",
			Help: "Groups dropped from a full count bucket (the lowest counts go first) to bound memory."}, rule),
		reloadOK: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_rules_last_reload_successful",
			Help: "1 if the last load of the threshold rule files succeeded, 0 if it failed (the previous rules keep running)."}),
		reloadTime: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_rules_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful load of the threshold rule files."}),
		leader: f.NewGauge(prometheus.GaugeOpts{Name: "authpipe_threshold_leader",
			Help: "1 on the replica that holds the threshold lease and runs the scheduled checks."}),
		events: f.NewCounterVec(prometheus.CounterOpts{Name: "authpipe_threshold_events_total",
			Help: "Buffered events taken by the threshold counter, by result."}, []string{"result"}),
		realtime: f.NewCounter(prometheus.CounterOpts{Name: "authpipe_threshold_realtime_alerts_total",
			Help: "Alerts raised by the real-time path, as events were counted, before any scheduled check."}),
	}
	for _, r := range eventResults {
		m.events.WithLabelValues(r)
	}
	return m
}

// perRule lists the vectors labelled by the rule alone.
func (m *engineMetrics) perRule() []*prometheus.MetricVec {
	return []*prometheus.MetricVec{m.breached.MetricVec, m.value.MetricVec, m.lastCheck.MetricVec, m.checks.MetricVec,
		m.checkErrors.MetricVec, m.duration.MetricVec, m.cut.MetricVec}
}

// addRule creates a rule's series at 0.
func (m *engineMetrics) addRule(name string) {
	for _, v := range m.perRule() {
		_, _ = v.GetMetricWithLabelValues(name) // one label, a valid value: no error
	}
	for _, s := range jobStatuses {
		m.jobRuns.WithLabelValues(name, string(s))
	}
}

// removeRule deletes a rule's series.
func (m *engineMetrics) removeRule(name string) {
	for _, v := range m.perRule() {
		v.DeleteLabelValues(name)
	}
	for _, s := range jobStatuses {
		m.jobRuns.DeleteLabelValues(name, string(s))
	}
}

// jobMonitor feeds gocron's per-job outcomes and timings into the metrics.
type jobMonitor struct {
	m     *engineMetrics
	known func(name string) bool
}

var _ gocron.MonitorStatus = jobMonitor{}

func (j jobMonitor) IncrementJob(_ uuid.UUID, name string, _ []string, status gocron.JobStatus) {
	if j.known(name) {
		j.m.jobRuns.WithLabelValues(name, string(status)).Inc()
	}
}

func (j jobMonitor) RecordJobTiming(time.Time, time.Time, uuid.UUID, string, []string) {}

func (j jobMonitor) RecordJobTimingWithStatus(start, end time.Time, _ uuid.UUID, name string, _ []string, status gocron.JobStatus, _ error) {
	if !j.known(name) {
		return
	}
	j.m.duration.WithLabelValues(name).Observe(end.Sub(start).Seconds())
	j.m.checks.WithLabelValues(name).Inc()
	if status == gocron.Fail {
		j.m.checkErrors.WithLabelValues(name).Inc()
	}
}
