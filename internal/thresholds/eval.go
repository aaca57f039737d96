package thresholds

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// notifier takes alerts to send; it never blocks.
type notifier interface {
	Notify(alerts []notify.Alert)
}

// stateStore keeps counts and alert state: store.Redis, or store.Memory
// on the embedded buffer and for `rules test` (see package store).
type stateStore interface {
	Keys() store.Keyspace
	Count(ctx context.Context, entries []store.Entry, maxGroups int) (store.CountResult, error)
	Eval(ctx context.Context, q store.Query) (store.Result, error)

	// Active alert state, shared by replicas.
	ActiveAlerts(ctx context.Context) ([]store.ActiveAlert, error)
	// ClaimAlert stores a as active unless its rule/group already is.
	ClaimAlert(ctx context.Context, a store.ActiveAlert) (bool, error)
	// PutAlert overwrites the state of an active alert (same start).
	PutAlert(ctx context.Context, a store.ActiveAlert) error
	// DropAlert removes the alert of rule/group if it still started at startsAt.
	DropAlert(ctx context.Context, rule, group string, startsAt time.Time) (bool, error)
}

// evaluator is the logic shared by the engine and `rules test`: it turns
// events into count increments, checks rules, and runs the alert lifecycle
// on a store.
type evaluator struct {
	tenant    string
	st        stateStore
	clock     clockwork.Clock
	log       *slog.Logger
	m         *engineMetrics
	out       notifier
	leader    func() bool
	rules     atomic.Pointer[rules.Set]
	maxGroups int
	maxAlerts int
	top       int
	maxCand   int
	resend    time.Duration
	realtime  bool
	// live reports whether the counts are complete up to about now (see
	// freshness); nil: always. counted is told the newest event date of
	// each counted batch; nil: nobody asks.
	live    func(now time.Time) bool
	counted func(newest time.Time)
}

// newMemoryEvaluator is the evaluator of an in-memory run (`rules test`,
// Replay): the engine's defaults, always the leader, alerts to out.
func newMemoryEvaluator(rs *rules.Set, tenant string, st stateStore, clock clockwork.Clock, out notifier, realtime bool) *evaluator {
	ev := &evaluator{
		tenant: tenant, st: st, clock: clock, log: slog.New(slog.DiscardHandler),
		m: newEngineMetrics(prometheus.NewRegistry()), out: out, leader: func() bool { return true },
		maxGroups: DefaultMaxGroups, maxAlerts: DefaultMaxAlerts, top: DefaultTopOffenders,
		maxCand: DefaultMaxCandidates, resend: DefaultResendInterval, realtime: realtime,
	}
	ev.rules.Store(rs)
	return ev
}

// firingFor is how long a firing alert stays valid at Alertmanager without
// being re-sent: four re-send intervals, as Prometheus does.
func (ev *evaluator) firingFor() time.Duration { return 4 * ev.resend }

// countBatch counts a batch: valid events for the rules they match, invalid
// ones (ids only) just acknowledged. Then, with realtime (off while the
// embedded engine rebuilds its counts), the real-time path evaluates the
// count rules for the groups the batch touched.
func (ev *evaluator) countBatch(ctx context.Context, events []store.Event, invalid []string, realtime bool) error {
	rs := ev.rules.Load()
	now := ev.clock.Now()
	ks := ev.st.Keys()
	batch := make([]store.Entry, 0, len(events)+len(invalid))
	cutRule := map[string]string{}
	touched := map[string]map[string]bool{}
	var newest time.Time
	for i := range events {
		e := &events[i]
		if e.Date.After(newest) {
			newest = e.Date
		}
		ce := store.Entry{ID: e.ID}
		for _, r := range rs.Rules {
			ops := ks.OpsFor(r, *e, now)
			if len(ops) == 0 {
				continue
			}
			ce.Ops = append(ce.Ops, ops...)
			cutRule[ops[0].CutKey()] = r.Name
			if r.Realtime() {
				if touched[r.Name] == nil {
					touched[r.Name] = map[string]bool{}
				}
				touched[r.Name][ops[0].Group()] = true
			}
		}
		batch = append(batch, ce)
	}
	for _, id := range invalid {
		batch = append(batch, store.Entry{ID: id})
	}
	res, err := ev.st.Count(ctx, batch, ev.maxGroups)
	if err != nil {
		return err
	}
	if ev.counted != nil && !newest.IsZero() {
		ev.counted(newest)
	}
	ev.m.events.WithLabelValues(resultCounted).Add(float64(max(res.Counted-len(invalid), 0)))
	ev.m.events.WithLabelValues(resultDuplicate).Add(float64(res.Duplicates))
	ev.m.events.WithLabelValues(resultInvalid).Add(float64(len(invalid)))
	for x, n := range res.Cut {
		if name, ok := cutRule[x]; ok {
			ev.m.cut.WithLabelValues(name).Add(float64(n))
		}
	}
	if realtime && res.Counted > 0 {
		ev.evalRealtime(ctx, rs, touched, now)
	}
	return nil
}

// evalRealtime raises alerts for the groups a batch pushed over a count or
// distinct rule's threshold, without waiting for the scheduled check. It
// only ever raises: resolving is the scheduled check's job.
func (ev *evaluator) evalRealtime(ctx context.Context, rs *rules.Set, touched map[string]map[string]bool, now time.Time) {
	for _, name := range sortedKeys(touched) {
		r, ok := rs.Get(name)
		if !ok {
			continue
		}
		groups := sortedKeys(touched[name])
		lo, hi := store.WindowBuckets(r, now)
		res, err := ev.st.Eval(ctx, store.Query{Rule: r, Lo: lo, Hi: hi, Groups: groups})
		if err != nil {
			ev.log.Warn("real-time evaluation", "rule", r.Name, "err", err)
			continue
		}
		var hits []store.GroupValue
		for _, gv := range res.Values {
			if gv.Value >= r.Threshold {
				hits = append(hits, gv)
			}
		}
		if len(hits) == 0 {
			continue
		}
		sortValues(hits)
		active, err := ev.activeFor(ctx, r.Name)
		if err != nil {
			ev.log.Warn("real-time evaluation", "rule", r.Name, "err", err)
			continue
		}
		raised := ev.raise(ctx, r, hits, active, hits, res, now)
		ev.m.realtime.Add(float64(len(raised)))
		if len(raised) > 0 && ev.leader() {
			ev.m.breached.WithLabelValues(r.Name).Set(1)
			if v := hits[0].Value; v > gaugeValue(ev, r.Name) {
				ev.m.value.WithLabelValues(r.Name).Set(v)
			}
		}
		// Sent after the metrics are set: whoever sees the alert sees them.
		ev.out.Notify(raised)
	}
}

func gaugeValue(ev *evaluator, rule string) float64 {
	g, err := ev.m.value.GetMetricWithLabelValues(rule)
	if err != nil {
		return 0
	}
	return readGauge(g)
}

// CheckResult is the outcome of one scheduled check of a rule.
type CheckResult struct {
	Rule      string
	Value     float64            // highest value among the groups evaluated
	Breached  bool               // a group breaches, or an alert is held (Held > 0)
	Breaching []store.GroupValue // groups at or over the threshold, highest first
	Firing    int                // alerts active for the rule after the check
	Held      int                // of them, alerts below the threshold kept active: the counts are not live
}

// check evaluates rule r at now: sets its metrics, raises alerts for new
// breaching groups, refreshes the active ones and resolves those that no
// longer breach.
func (ev *evaluator) check(ctx context.Context, r *rules.Rule, now time.Time) (CheckResult, error) {
	out := CheckResult{Rule: r.Name}
	active, err := ev.activeFor(ctx, r.Name)
	if err != nil {
		return out, err
	}
	// Alerts raised under another definition of the rule (labels, severity,
	// what is counted) are resolved: their label set no longer exists.
	current := active[:0]
	for _, a := range active {
		if a.Fingerprint != r.AlertFingerprint() {
			ev.resolve(ctx, a, now)
			continue
		}
		current = append(current, a)
	}
	active = current
	lo, hi := store.WindowBuckets(r, now)
	q := store.Query{Rule: r, Lo: lo, Hi: hi, Threshold: r.Threshold, MaxCand: ev.maxCand, Top: ev.top}
	for _, a := range active {
		q.Groups = append(q.Groups, a.Group)
	}
	res, err := ev.st.Eval(ctx, q)
	if err != nil {
		return out, err
	}
	byGroup := map[string]store.GroupValue{}
	for _, gv := range res.Values {
		if r.Kind() == rules.KindRatio && gv.Den < r.MinDenominator() {
			continue // too few events for a meaningful ratio
		}
		byGroup[gv.Group] = gv
	}
	values := slices.Collect(maps.Values(byGroup))
	sortValues(values)
	var breaching []store.GroupValue
	for _, gv := range values {
		if gv.Value >= r.Threshold {
			breaching = append(breaching, gv)
		}
	}
	if len(values) > 0 {
		out.Value = values[0].Value
	}
	out.Breaching = breaching
	if !ev.leader() {
		out.Breached = len(breaching) > 0
		return out, nil // lost the lease while checking: leave state to the new holder
	}

	// A group below the threshold is resolved only on live counts: after a
	// buffer error the counts may lack what happened meanwhile, and an
	// alert resolved now would fire again, with a new start, once they
	// have caught up.
	live := ev.live == nil || ev.live(now)
	firing := 0
	for _, a := range active {
		gv, still := byGroup[a.Group]
		if !still || gv.Value < r.Threshold {
			if !live {
				firing++
				out.Held++
				continue
			}
			ev.resolve(ctx, a, now)
			continue
		}
		firing++
		labels, ann := ev.render(r, gv, values, res)
		a.Labels, a.Annotations, a.Value = labels, ann, gv.Value
		if err := ev.st.PutAlert(ctx, a); err != nil {
			ev.log.Warn("update alert state", "rule", r.Name, "err", err)
		}
	}
	if out.Held > 0 {
		ev.log.Debug("alerts held active until the counts are live", "rule", r.Name, "alerts", out.Held)
	}
	out.Breached = len(breaching) > 0 || out.Held > 0
	ev.m.value.WithLabelValues(r.Name).Set(out.Value)
	ev.m.breached.WithLabelValues(r.Name).Set(boolFloat(out.Breached))
	ev.m.lastCheck.WithLabelValues(r.Name).Set(float64(now.UnixNano()) / 1e9)

	raised := ev.raise(ctx, r, breaching, active, values, res, now)
	ev.out.Notify(raised)
	out.Firing = firing + len(raised)
	return out, nil
}

// raise claims alerts for breaching groups that have none yet, as long as
// the rule has fewer than maxAlerts active. It returns the alerts it raised,
// for the caller to send.
func (ev *evaluator) raise(ctx context.Context, r *rules.Rule, breaching []store.GroupValue, active []store.ActiveAlert, all []store.GroupValue, res store.Result, now time.Time) []notify.Alert {
	isActive := map[string]bool{}
	for _, a := range active {
		isActive[a.Group] = true
	}
	n := len(active)
	var send []notify.Alert
	for _, gv := range breaching {
		if isActive[gv.Group] {
			continue
		}
		if n >= ev.maxAlerts {
			break
		}
		labels, ann := ev.render(r, gv, all, res)
		a := store.ActiveAlert{Rule: r.Name, Group: gv.Group, Fingerprint: r.AlertFingerprint(), Labels: labels, Annotations: ann,
			StartsAt: now, LastSent: now, Value: gv.Value}
		ok, err := ev.st.ClaimAlert(ctx, a)
		if err != nil {
			ev.log.Warn("claim alert", "rule", r.Name, "err", err)
			continue
		}
		if !ok {
			continue // another replica, or the real-time path, raised it first
		}
		n++
		send = append(send, notify.Alert{Labels: labels, Annotations: ann, StartsAt: now, EndsAt: now.Add(ev.firingFor())})
	}
	return send
}

// resolve sends a's resolution and drops its state.
func (ev *evaluator) resolve(ctx context.Context, a store.ActiveAlert, now time.Time) {
	dropped, err := ev.st.DropAlert(ctx, a.Rule, a.Group, a.StartsAt)
	if err != nil {
		ev.log.Warn("resolve alert", "rule", a.Rule, "err", err)
		return
	}
	if dropped {
		ev.out.Notify([]notify.Alert{{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: now}})
	}
}

// resendActive re-sends every active alert not sent for a re-send interval,
// and resolves alerts of rules that were removed or changed.
func (ev *evaluator) resendActive(ctx context.Context, now time.Time) error {
	all, err := ev.st.ActiveAlerts(ctx)
	if err != nil {
		return err
	}
	rs := ev.rules.Load()
	var send []notify.Alert
	for _, a := range all {
		r, ok := rs.Get(a.Rule)
		if !ok || r.AlertFingerprint() != a.Fingerprint {
			ev.resolve(ctx, a, now)
			continue
		}
		if now.Sub(a.LastSent) < ev.resend-ev.resend/10 {
			continue
		}
		a.LastSent = now
		if err := ev.st.PutAlert(ctx, a); err != nil {
			return err
		}
		send = append(send, notify.Alert{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: now.Add(ev.firingFor())})
	}
	ev.out.Notify(send)
	return nil
}

func (ev *evaluator) activeFor(ctx context.Context, rule string) ([]store.ActiveAlert, error) {
	all, err := ev.st.ActiveAlerts(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(a store.ActiveAlert) bool { return a.Rule != rule }), nil
}

// render builds an alert's labels and annotations for group gv.
func (ev *evaluator) render(r *rules.Rule, gv store.GroupValue, all []store.GroupValue, res store.Result) (map[string]string, map[string]string) {
	labels := map[string]string{"alertname": r.Name, "severity": r.Severity}
	if ev.tenant != "" {
		labels["tenant"] = ev.tenant
	}
	maps.Copy(labels, r.Labels)
	if r.GroupBy != "" {
		labels[r.GroupBy] = gv.Group
	}
	ann := map[string]string{
		rules.AnnotationValue:        formatValue(gv.Value),
		rules.AnnotationThreshold:    formatValue(r.Threshold),
		rules.AnnotationWindow:       formatDuration(r.Window),
		rules.AnnotationTopOffenders: topOffenders(r, gv, all, ev.top),
	}
	if res.CutGroups > 0 {
		ann[rules.AnnotationGroupsCut] = fmt.Sprintf("%d groups (%d events) dropped from full buckets in this window", res.CutGroups, res.CutEvents)
	}
	data := rules.AnnotationData{Rule: r.Name, Tenant: ev.tenant, Severity: r.Severity, GroupBy: r.GroupBy, Group: gv.Group,
		Value: formatValue(gv.Value), Threshold: formatValue(r.Threshold), Window: formatDuration(r.Window), Labels: r.Labels}
	for k := range r.Annotations {
		v, err := r.Annotation(k, data)
		if err != nil {
			ev.log.Warn("render annotation", "rule", r.Name, "annotation", k, "err", err)
		}
		ann[k] = v
	}
	return labels, ann
}

// topOffenders lists the alert's own group first, then the other groups
// with the highest values, n in all: "a=40, b=12".
func topOffenders(r *rules.Rule, own store.GroupValue, values []store.GroupValue, n int) string {
	if r.GroupBy == "" {
		return formatValue(own.Value)
	}
	parts := []string{own.Group + "=" + formatValue(own.Value)}
	for _, gv := range values {
		if len(parts) >= n {
			break
		}
		if gv.Group != own.Group {
			parts = append(parts, gv.Group+"="+formatValue(gv.Value))
		}
	}
	return strings.Join(parts, ", ")
}

// sortValues orders by value, highest first, then by group.
func sortValues(v []store.GroupValue) {
	slices.SortFunc(v, func(a, b store.GroupValue) int {
		return cmp.Or(cmp.Compare(b.Value, a.Value), strings.Compare(a.Group, b.Group))
	})
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sortedKeys returns m's keys in order, in one allocation: the real-time
// path sorts per batch.
func sortedKeys[V any](m map[string]V) []string {
	keys := slices.AppendSeq(make([]string, 0, len(m)), maps.Keys(m))
	slices.Sort(keys)
	return keys
}

// formatDuration prints a duration the way rule files write it (5m, 1h30m, 1d).
func formatDuration(d time.Duration) string { return model.Duration(d).String() }

// formatValue prints a value: whole numbers without decimals, fractions
// with at most 4.
func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(math.Round(v*10000)/10000, 'f', -1, 64)
}
