// Package status renders authpipe's status page: one server-rendered HTML
// page at / that reloads itself every two seconds and needs no JavaScript
// and no build step.
//
// Every figure on the page is read from the process's Prometheus registry
// (a prometheus.Gatherer), so the page shows exactly what /metrics shows,
// and nothing else: metrics carry no user id, e-mail address, IP address or
// URL, so neither does the page. Snapshot gives the same figures as a
// Summary, for a terminal live view, and Progress writes their growth to
// the log every few minutes while events flow (silent while idle).
//
// Metrics that are not registered are simply absent from the page (no
// rules loaded, no buffer yet); nothing is invented for them.
//
// Rates are not metrics: the handler keeps the previous snapshot of the
// process and divides the growth of each stage's acked counter by the time
// between two views. The first view, and a view after a long pause, shows
// no rates.
package status

import (
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/authpipe/authpipe/internal/metrics"
)

// stageRank orders the known stages as the pipeline runs them.
var stageRank = map[string]int{metrics.StagePoll: 0, metrics.StageBuffer: 1, metrics.StageForward: 2}

// Summary is the process's state as its metrics tell it.
type Summary struct {
	// Version, Revision and GoVersion are the labels of authpipe_build_info;
	// empty when it is not registered.
	Version, Revision, GoVersion string
	// Ready is authpipe_ready == 1; ReadyKnown tells whether it is registered.
	Ready, ReadyKnown bool
	// ReloadOK is authpipe_rules_last_reload_successful == 1; ReloadKnown
	// tells whether it is registered (the threshold engine runs).
	ReloadOK, ReloadKnown bool
	// Tenants are sorted by name.
	Tenants []Tenant
	// Rules are sorted by name; empty when no rules are loaded.
	Rules []Rule
	// RateInterval is the time over which the stages' RatePerSec were
	// measured; 0 when no rates are known (Snapshot never sets them).
	RateInterval time.Duration
	// RedisMemoryBytes is authpipe_buffer_redis_memory_bytes (Redis'
	// used_memory); RedisMemoryKnown tells whether it is reported (Redis
	// buffer, INFO allowed).
	RedisMemoryBytes float64
	RedisMemoryKnown bool
	// FileBytes is authpipe_buffer_file_bytes summed over the tenants (the
	// embedded buffer's files); FileKnown tells whether it is reported.
	FileBytes float64
	FileKnown bool
}

// BytesPerRetainedEvent is Redis' memory (or, with the embedded buffer,
// its files' size) divided by the events it retains for all tenants: the
// log_ids in the dedupe record (every event buffered within the retention
// is there, delivered or not). false when either is unknown or zero. Redis'
// figure includes its own baseline (about 1 MB) and whatever else the
// server holds.
func (s Summary) BytesPerRetainedEvent() (float64, bool) {
	var events float64
	for _, t := range s.Tenants {
		events += t.Dedupe
	}
	bytes, known := s.RedisMemoryBytes, s.RedisMemoryKnown
	if !known {
		bytes, known = s.FileBytes, s.FileKnown
	}
	if !known || events <= 0 {
		return 0, false
	}
	return bytes / events, true
}

// Tenant is one Auth0 tenant's pipeline. A figure whose metric is absent is 0.
type Tenant struct {
	Name string
	// Stages are the stages that have counters, in pipeline order: poll,
	// buffer, forward (then any unknown stage, by name).
	Stages []Stage
	// CheckpointLagSeconds is authpipe_auth0_checkpoint_lag_seconds.
	CheckpointLagSeconds float64
	// RetentionSeconds is Auth0's log retention. No metric carries it:
	// Snapshot leaves it 0 and the handler fills it from Options.Retention.
	RetentionSeconds float64
	// Backlog, Pending and DeadLetters are the buffer's gauges; Gaps is
	// authpipe_auth0_gaps_total.
	Backlog, Pending, DeadLetters, Gaps float64
	// BufferEntries is authpipe_buffer_stream_events (entries still in the
	// buffer's stream), Dedupe authpipe_buffer_dedupe_entries (log_ids
	// remembered).
	BufferEntries, Dedupe float64
	// Polled is authpipe_auth0_events_polled_total, Acked is
	// authpipe_forward_events_acked_total.
	Polled, Acked float64
	// DataLosses is authpipe_buffer_data_loss_total: times this process
	// found the buffer had lost data.
	DataLosses float64
	// DataLoss is the last of them; nil when there was none
	// (authpipe_buffer_data_loss_* gauges).
	DataLoss *DataLoss
	// PolledFirst is authpipe_auth0_events_first_total: polled logs the
	// buffer did not hold yet.
	PolledFirst float64
	// Stream is the tenant's Auth0 Log Stream; nil when its receiver is
	// off (no authpipe_stream_* series).
	Stream *Stream
}

// Stream is what a tenant's Auth0 Log Stream delivered, against the poller.
type Stream struct {
	// First counts the logs the stream stored first
	// (authpipe_stream_events_total{outcome="new"}), Duplicates those it
	// delivered that were stored already.
	First, Duplicates float64
	// Missed is authpipe_stream_missed_events_total.
	Missed float64
	// LastEvent is when the stream last delivered; zero before the first.
	LastEvent time.Time
}

// FirstShares returns the shares (0–1) of the logs each source stored
// first, the stream's and the poller's, and false when neither stored any.
func (t Tenant) FirstShares() (stream, poller float64, ok bool) {
	var sf float64
	if t.Stream != nil {
		sf = t.Stream.First
	}
	total := sf + t.PolledFirst
	if total <= 0 {
		return 0, 0, false
	}
	return sf / total, t.PolledFirst / total, true
}

// DataLoss is the last time the tenant's buffer was found to have lost
// data, and what was done about it.
type DataLoss struct {
	// At is when the last incident was found.
	At time.Time
	// Found are the kinds of data found missing or gone backwards
	// (checkpoint, stream, consumer_group, dedupe_record, fencing_token,
	// buffer_file).
	Found []string
	// RepollFrom and RepollUntil are the window polled again from Auth0;
	// zero when nothing had to be polled again.
	RepollFrom, RepollUntil time.Time
}

// LagPercent returns the checkpoint lag as a percentage of the retention,
// and false when the retention is unknown.
func (t Tenant) LagPercent() (float64, bool) {
	if t.RetentionSeconds <= 0 {
		return 0, false
	}
	return 100 * t.CheckpointLagSeconds / t.RetentionSeconds, true
}

// Stage is one pipeline stage's counters (authpipe_stage_events_*_total).
// See package metrics for what each counter means per stage.
type Stage struct {
	Name                             string
	Received, Written, Acked, Failed float64
	// RatePerSec is the growth of Acked per second over the Summary's
	// RateInterval; meaningless while RateInterval is 0.
	RatePerSec float64
}

// Rule is one threshold rule's state at its last check.
type Rule struct {
	Name     string
	Value    float64
	Breached bool
}

// Snapshot reads the figures from g. When g reports an error together with
// metrics (a collector failed), Snapshot returns the figures it could read
// and the error.
func Snapshot(g prometheus.Gatherer) (Summary, error) {
	mfs, err := g.Gather()
	s := summarize(mfs)
	if err != nil {
		return s, fmt.Errorf("gather metrics: %w", err)
	}
	return s, nil
}

// SetRates sets each stage's RatePerSec from the growth of its acked
// counter since prev, which was taken elapsed earlier, and sets
// RateInterval. A counter that went down was reset and counts from 0; a
// stage absent from prev counts from 0. A non-positive elapsed changes
// nothing.
func (s *Summary) SetRates(prev Summary, elapsed time.Duration) {
	if elapsed <= 0 {
		return
	}
	before := byStage(prev, func(st Stage) float64 { return st.Acked })
	for i := range s.Tenants {
		t := &s.Tenants[i]
		for j := range t.Stages {
			st := &t.Stages[j]
			st.RatePerSec = delta(st.Acked, before[stageKey{t.Name, st.Name}]) / elapsed.Seconds()
		}
	}
	s.RateInterval = elapsed
}

type stageKey struct{ tenant, stage string }

// byStage maps each tenant's stage in s to f of it.
func byStage(s Summary, f func(Stage) float64) map[stageKey]float64 {
	m := make(map[stageKey]float64)
	for _, t := range s.Tenants {
		for _, st := range t.Stages {
			m[stageKey{t.Name, st.Name}] = f(st)
		}
	}
	return m
}

// summarize builds a Summary from gathered families. Series of a family
// that differ in labels other than tenant (or rule) are summed, except the
// checkpoint lag, of which the largest counts.
func summarize(mfs []*dto.MetricFamily) Summary {
	var s Summary
	tenants := map[string]*Tenant{}
	stages := map[stageKey]*Stage{}
	rules := map[string]*Rule{}

	tenant := func(m *dto.Metric) *Tenant {
		name := label(m, "tenant")
		return upsert(tenants, name, func() *Tenant { return &Tenant{Name: name} })
	}
	stage := func(m *dto.Metric) *Stage {
		k := stageKey{tenant(m).Name, label(m, "stage")}
		return upsert(stages, k, func() *Stage { return &Stage{Name: k.stage} })
	}
	rule := func(m *dto.Metric) *Rule {
		name := label(m, "rule")
		return upsert(rules, name, func() *Rule { return &Rule{Name: name} })
	}

	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v, ok := value(m)
			if !ok {
				continue
			}
			switch mf.GetName() {
			case "authpipe_stage_events_received_total":
				stage(m).Received += v
			case "authpipe_stage_events_written_total":
				stage(m).Written += v
			case "authpipe_stage_events_acked_total":
				stage(m).Acked += v
			case "authpipe_stage_events_failed_total":
				stage(m).Failed += v
			case "authpipe_auth0_events_polled_total":
				tenant(m).Polled += v
			case "authpipe_forward_events_acked_total":
				tenant(m).Acked += v
			case "authpipe_auth0_checkpoint_lag_seconds":
				t := tenant(m)
				t.CheckpointLagSeconds = max(t.CheckpointLagSeconds, v)
			case "authpipe_auth0_gaps_total":
				tenant(m).Gaps += v
			case "authpipe_buffer_backlog_events":
				tenant(m).Backlog += v
			case "authpipe_buffer_pending_events":
				tenant(m).Pending += v
			case "authpipe_dead_letter_events":
				tenant(m).DeadLetters += v
			case "authpipe_buffer_stream_events":
				tenant(m).BufferEntries += v
			case "authpipe_buffer_dedupe_entries":
				tenant(m).Dedupe += v
			case "authpipe_buffer_redis_memory_bytes":
				s.RedisMemoryKnown, s.RedisMemoryBytes = true, v
			case "authpipe_buffer_file_bytes":
				s.FileKnown, s.FileBytes = true, s.FileBytes+v
			case "authpipe_threshold_value":
				rule(m).Value = v
			case "authpipe_threshold_breached":
				r := rule(m)
				r.Breached = r.Breached || v == 1
			case "authpipe_rules_last_reload_successful":
				s.ReloadKnown, s.ReloadOK = true, v == 1
			case "authpipe_ready":
				s.ReadyKnown, s.Ready = true, v == 1
			case "authpipe_build_info":
				s.Version, s.Revision, s.GoVersion = label(m, "version"), label(m, "revision"), label(m, "goversion")
			case "authpipe_buffer_data_loss_total":
				tenant(m).DataLosses += v
			case "authpipe_buffer_data_loss_last_timestamp_seconds":
				if d := ensure(&tenant(m).DataLoss); v > 0 && unix(v).After(d.At) {
					d.At = unix(v)
				}
			case "authpipe_buffer_data_loss_found":
				if v == 1 {
					d := ensure(&tenant(m).DataLoss)
					d.Found = append(d.Found, label(m, "what"))
				}
			case "authpipe_buffer_data_loss_repoll_from_timestamp_seconds":
				if v > 0 {
					ensure(&tenant(m).DataLoss).RepollFrom = unix(v)
				}
			case "authpipe_auth0_events_first_total":
				tenant(m).PolledFirst += v
			case "authpipe_stream_events_total":
				st := ensure(&tenant(m).Stream)
				switch label(m, "outcome") {
				case "new":
					st.First += v
				case "duplicate":
					st.Duplicates += v
				}
			case "authpipe_stream_missed_events_total":
				ensure(&tenant(m).Stream).Missed += v
			case "authpipe_stream_last_event_timestamp_seconds":
				if st := ensure(&tenant(m).Stream); v > 0 && unix(v).After(st.LastEvent) {
					st.LastEvent = unix(v)
				}
			case "authpipe_buffer_data_loss_repoll_until_timestamp_seconds":
				if v > 0 {
					ensure(&tenant(m).DataLoss).RepollUntil = unix(v)
				}
			}
		}
	}

	for k, st := range stages {
		t := tenants[k.tenant]
		t.Stages = append(t.Stages, *st)
	}
	for _, t := range tenants {
		if d := t.DataLoss; d != nil && d.At.IsZero() {
			t.DataLoss = nil // the series exist at 0: nothing happened
		}
		sort.Slice(t.Stages, func(i, j int) bool { return stageLess(t.Stages[i].Name, t.Stages[j].Name) })
		s.Tenants = append(s.Tenants, *t)
	}
	sort.Slice(s.Tenants, func(i, j int) bool { return s.Tenants[i].Name < s.Tenants[j].Name })
	for _, r := range rules {
		s.Rules = append(s.Rules, *r)
	}
	sort.Slice(s.Rules, func(i, j int) bool { return s.Rules[i].Name < s.Rules[j].Name })
	return s
}

// upsert returns m[k], adding mk() under k first when it is absent.
func upsert[K comparable, V any](m map[K]*V, k K, mk func() *V) *V {
	v, ok := m[k]
	if !ok {
		v = mk()
		m[k] = v
	}
	return v
}

// ensure returns *p, creating it: a tenant's Stream or DataLoss.
func ensure[T any](p **T) *T {
	if *p == nil {
		*p = new(T)
	}
	return *p
}

func unix(secs float64) time.Time {
	return time.Unix(0, int64(secs*1e9)).UTC()
}

// stageLess orders poll, buffer, forward, then unknown stages by name.
func stageLess(a, b string) bool {
	ra, aok := stageRank[a]
	rb, bok := stageRank[b]
	switch {
	case aok && bok:
		return ra < rb
	case aok != bok:
		return aok
	default:
		return a < b
	}
}

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// value returns the value of a counter, gauge or untyped sample.
func value(m *dto.Metric) (float64, bool) {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}
