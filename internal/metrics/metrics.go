// Package metrics holds the metric families that every pipeline stage shares,
// so a dashboard reads across stages with one query: received, written,
// acked and failed events per stage and tenant. Like every component's
// metrics they carry no tenant label of their own: each tenant's Stages is
// registered through the tenant's registerer (Tenant), which adds it.
//
// Per stage:
//   - poll:    received = events in pages fetched from Auth0; written = events
//     committed to the buffer with their checkpoint; acked = written (the
//     buffer's commit is the poll's acknowledgement); failed = events in pages
//     that could not be decoded or buffered (they are fetched again).
//   - buffer:  received = events offered to the buffer; written = events newly
//     stored (duplicates by log_id are not); acked = events acknowledged by the
//     forwarder; failed = events moved to the dead-letter stream.
//   - forward: received = entries read from the buffer (redeliveries included);
//     written = messages handed to the Segment client; acked = messages Segment
//     accepted, and events the forwarding filter left out on purpose (they
//     are acknowledged without being sent); failed = messages that failed
//     (each failure, retried or not).
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Stage names.
const (
	StagePoll    = "poll"
	StageBuffer  = "buffer"
	StageForward = "forward"
)

// Stages are the shared per-stage counter families of one tenant. Build one
// per tenant, on the tenant's registerer, and hand it to the tenant's
// poller, buffer and forwarder.
type Stages struct {
	received, written, acked, failed *prometheus.CounterVec
}

// NewStages registers the per-stage families on reg.
func NewStages(reg prometheus.Registerer) *Stages {
	f := promauto.With(reg)
	vec := func(what, help string) *prometheus.CounterVec {
		return f.NewCounterVec(prometheus.CounterOpts{
			Name: "authpipe_stage_events_" + what + "_total",
			Help: help,
		}, []string{"stage"})
	}
	return &Stages{
		received: vec("received", "Events that entered a pipeline stage."),
		written:  vec("written", "Events a pipeline stage passed on to the next."),
		acked:    vec("acked", "Events the next stage confirmed as durably taken."),
		failed:   vec("failed", "Events a pipeline stage failed to pass on (each failure)."),
	}
}

// Stage is the four counters of one stage.
type Stage struct {
	Received, Written, Acked, Failed prometheus.Counter
}

// For returns (and creates at zero) the counters of one stage. A nil
// *Stages gives counters registered nowhere, for tests.
func (s *Stages) For(stage string) Stage {
	if s == nil {
		s = NewStages(prometheus.NewRegistry())
	}
	return Stage{
		Received: s.received.WithLabelValues(stage),
		Written:  s.written.WithLabelValues(stage),
		Acked:    s.acked.WithLabelValues(stage),
		Failed:   s.failed.WithLabelValues(stage),
	}
}

// Tenant is the registerer of one tenant's metrics on reg: every series
// registered through it gets tenant=<name>. It is the project's one way
// of labelling a tenant's metrics (package pipeline makes one per tenant
// and hands it to the tenant's components, which register plain
// metrics), so several tenants share a registry and application-level
// metrics, registered on reg itself, never get the label.
func Tenant(reg prometheus.Registerer, name string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{"tenant": name}, reg)
}

// Registrar registers a component's metrics on one registerer and keeps
// every error, so the component reports all of them at once (Err) instead
// of panicking as promauto would: a second component of the same kind on
// one tenant's registerer is an error its caller can return.
type Registrar struct {
	reg  prometheus.Registerer
	errs []error
}

// NewRegistrar registers on reg.
func NewRegistrar(reg prometheus.Registerer) *Registrar { return &Registrar{reg: reg} }

// Register registers c, keeping the error.
func (r *Registrar) Register(c prometheus.Collector) {
	if err := r.reg.Register(c); err != nil {
		r.errs = append(r.errs, err)
	}
}

// Counter registers a counter.
func (r *Registrar) Counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	r.Register(c)
	return c
}

// CounterVec registers a counter family with the given labels.
func (r *Registrar) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	r.Register(v)
	return v
}

// Gauge registers a gauge.
func (r *Registrar) Gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	r.Register(g)
	return g
}

// Err is every registration error so far, joined; nil if none.
func (r *Registrar) Err() error { return errors.Join(r.errs...) }
