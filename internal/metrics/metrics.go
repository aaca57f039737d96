// Package metrics holds the metric families that every pipeline stage shares,
// so a dashboard reads across stages with one query: received, written,
// acked and failed events per stage and tenant.
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Stage names.
const (
	StagePoll    = "poll"
	StageBuffer  = "buffer"
	StageForward = "forward"
)

// Stages are the shared per-stage counter families. Build one per registry.
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
		}, []string{"stage", "tenant"})
	}
	return &Stages{
		received: vec("received", "Events that entered a pipeline stage."),
		written:  vec("written", "Events a pipeline stage passed on to the next."),
		acked:    vec("acked", "Events the next stage confirmed as durably taken."),
		failed:   vec("failed", "Events a pipeline stage failed to pass on (each failure)."),
	}
}

// Stage is the four counters of one stage for one tenant.
type Stage struct {
	Received, Written, Acked, Failed prometheus.Counter
}

// For returns (and creates at zero) the counters of one stage and tenant.
// A nil *Stages gives counters registered nowhere, for tests.
func (s *Stages) For(stage, tenant string) Stage {
	if s == nil {
		s = NewStages(prometheus.NewRegistry())
	}
	return Stage{
		Received: s.received.WithLabelValues(stage, tenant),
		Written:  s.written.WithLabelValues(stage, tenant),
		Acked:    s.acked.WithLabelValues(stage, tenant),
		Failed:   s.failed.WithLabelValues(stage, tenant),
	}
}
