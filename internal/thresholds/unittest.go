package thresholds

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// Rule test files (`authpipe rules test FILE…`), in the spirit of
// `promtool test rules`:
//
//	rule_files: [../thresholds.yml]   # relative to the test file
//	start: 2024-05-01T12:00:00Z       # optional: time of offset 0
//	tests:
//	  - name: 40 failed logins from one IP fire
//	    events:                       # one line may stand for many events
//	      - {type: fp, ip: 203.0.113.7, user_name: "user{i}@example.com", at: 0s, repeat: 40, interval: 2s}
//	    alert_rule_test:
//	      - eval_time: 2m
//	        alertname: FailedLoginsPerIP
//	        exp_alerts:
//	          - exp_labels: {severity: warning, ip: 203.0.113.7}
//	            exp_value: 40          # optional
//	            exp_annotations: {…}   # optional: these must match exactly
//	      - eval_time: 20m
//	        alertname: FailedLoginsPerIP
//	        exp_alerts: []            # nothing may fire
//
// Events are counted at their own time, in order. At each eval_time every
// rule is checked (in file order), then the alerts active for alertname
// must be exactly exp_alerts: the labels are compared in full except
// alertname and tenant. "{i}" in an event's string fields becomes the
// repeat index (0, 1, …). Evaluation is in memory with the same counting
// model as Redis (store.Memory).

type testFile struct {
	RuleFiles []string   `yaml:"rule_files"`
	Start     string     `yaml:"start"`
	Tests     []testCase `yaml:"tests"`
}

type testCase struct {
	Name   string      `yaml:"name"`
	Events []testEvent `yaml:"events"`
	Alerts []testEval  `yaml:"alert_rule_test"`
}

type testEvent struct {
	Type       string `yaml:"type"`
	IP         string `yaml:"ip"`
	UserID     string `yaml:"user_id"`
	UserName   string `yaml:"user_name"`
	ClientID   string `yaml:"client_id"`
	Connection string `yaml:"connection"`
	At         string `yaml:"at"`
	Repeat     int    `yaml:"repeat"`
	Interval   string `yaml:"interval"`
}

type testEval struct {
	EvalTime  string         `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []testExpected `yaml:"exp_alerts"`
}

type testExpected struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
	ExpValue       *float64          `yaml:"exp_value"`
}

// defaultTestStart is offset 0 of tests that set no start.
var defaultTestStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// TestFiles runs rule test files (`authpipe rules test FILE…`). It writes a
// line per test file and per failed case to w and returns an error if any
// case fails or a file is invalid.
func TestFiles(paths []string, w io.Writer) error {
	if len(paths) == 0 {
		return errors.New("rules test: no files given")
	}
	failed := 0
	for _, p := range paths {
		n, failedTests, fails, err := runTestFile(p)
		if err != nil {
			failed++
			fmt.Fprintf(w, "%s: %v\n", p, err)
			continue
		}
		for _, f := range fails {
			fmt.Fprintf(w, "%s: FAIL %s\n", p, f)
		}
		if len(fails) > 0 {
			failed++
			fmt.Fprintf(w, "%s: %d of %d tests failed\n", p, failedTests, n)
			continue
		}
		fmt.Fprintf(w, "%s: %d tests passed\n", p, n)
	}
	if failed > 0 {
		return fmt.Errorf("rules test: %d of %d files failed", failed, len(paths))
	}
	return nil
}

// runTestFile runs one test file: it returns the number of tests, of
// failed tests, and the failures.
func runTestFile(path string) (int, int, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("read test file: %w", err)
	}
	var tf testFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		return 0, 0, nil, fmt.Errorf("decode test file: %w", err)
	}
	if len(tf.RuleFiles) == 0 {
		return 0, 0, nil, errors.New(`field "rule_files": required`)
	}
	if len(tf.Tests) == 0 {
		return 0, 0, nil, errors.New(`field "tests": required`)
	}
	start := defaultTestStart
	if tf.Start != "" {
		if start, err = time.Parse(time.RFC3339, tf.Start); err != nil {
			return 0, 0, nil, fmt.Errorf(`field "start": %q is not RFC 3339`, tf.Start)
		}
	}
	var files []string
	for _, rf := range tf.RuleFiles {
		if !filepath.IsAbs(rf) {
			rf = filepath.Join(filepath.Dir(path), rf)
		}
		more, err := rules.Files(rf)
		if err != nil {
			return 0, 0, nil, err
		}
		files = append(files, more...)
	}
	rs, err := rules.LoadFiles(files)
	if err != nil {
		return 0, 0, nil, err
	}
	var fails []string
	failed := 0
	for i, tc := range tf.Tests {
		name := cmp.Or(tc.Name, "#"+strconv.Itoa(i+1))
		problems := runTestCase(rs, start, tc)
		if len(problems) > 0 {
			failed++
		}
		for _, msg := range problems {
			fails = append(fails, fmt.Sprintf("test %q: %s", name, msg))
		}
	}
	return len(tf.Tests), failed, fails, nil
}

type timedEvent struct {
	at time.Duration
	e  store.Event
}

func runTestCase(rs *rules.Set, start time.Time, tc testCase) []string {
	var events []timedEvent
	var problems []string
	for i, te := range tc.Events {
		at, err := testDuration(te.At, true)
		if err != nil {
			problems = append(problems, fmt.Sprintf("events[%d].at: %v", i, err))
			continue
		}
		interval, err := testDuration(te.Interval, true)
		if err != nil {
			problems = append(problems, fmt.Sprintf("events[%d].interval: %v", i, err))
			continue
		}
		if te.Type == "" {
			problems = append(problems, fmt.Sprintf("events[%d].type: required", i))
			continue
		}
		n := cmp.Or(te.Repeat, 1)
		if n < 0 || n > 100000 {
			problems = append(problems, fmt.Sprintf("events[%d].repeat: %d out of range (1 to 100000)", i, n))
			continue
		}
		for k := range n {
			sub := func(s string) string { return store.CleanValue(strings.ReplaceAll(s, "{i}", strconv.Itoa(k))) }
			t := at + time.Duration(k)*interval
			e := store.Event{ID: fmt.Sprintf("%d-%d-%d", i, k, t), Date: start.Add(t), Type: te.Type}
			e.Fields = [5]string{sub(te.IP), sub(te.UserID), sub(te.UserName), sub(te.ClientID), sub(te.Connection)}
			events = append(events, timedEvent{at: t, e: e})
		}
	}
	type evalPoint struct {
		at time.Duration
		te testEval
	}
	var evals []evalPoint
	for i, te := range tc.Alerts {
		at, err := testDuration(te.EvalTime, false)
		if err != nil {
			problems = append(problems, fmt.Sprintf("alert_rule_test[%d].eval_time: %v", i, err))
			continue
		}
		if _, ok := rs.Get(te.Alertname); !ok {
			problems = append(problems, fmt.Sprintf("alert_rule_test[%d].alertname: no rule %q in the rule files", i, te.Alertname))
			continue
		}
		evals = append(evals, evalPoint{at, te})
	}
	if len(evals) == 0 && len(problems) == 0 {
		problems = append(problems, "alert_rule_test: no evaluations")
	}
	if len(problems) > 0 {
		return problems
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at < events[j].at })
	sort.SliceStable(evals, func(i, j int) bool { return evals[i].at < evals[j].at })

	clock := clockwork.NewFakeClockAt(start)
	// Sent alerts go nowhere: a test compares the active state.
	ev := newMemoryEvaluator(rs, "", store.NewMemory(), clock, notify.Fanout(nil), false)
	ctx := context.Background()
	next := 0
	for _, ep := range evals {
		for next < len(events) && events[next].at <= ep.at {
			clock.Advance(start.Add(events[next].at).Sub(clock.Now()))
			if err := ev.countBatch(ctx, []store.Event{events[next].e}, nil, ev.realtime); err != nil {
				return []string{err.Error()}
			}
			next++
		}
		clock.Advance(start.Add(ep.at).Sub(clock.Now()))
		for _, r := range rs.Rules {
			if _, err := ev.check(ctx, r, clock.Now()); err != nil {
				return []string{err.Error()}
			}
		}
		active, _ := ev.activeFor(ctx, ep.te.Alertname)
		problems = append(problems, compareAlerts(ep.te, active)...)
	}
	return problems
}

func testDuration(s string, zeroOK bool) (time.Duration, error) {
	if s == "" {
		if zeroOK {
			return 0, nil
		}
		return 0, errors.New("required")
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return time.Duration(d), nil
}

// compareAlerts matches the active alerts with the expected ones.
func compareAlerts(te testEval, active []store.ActiveAlert) []string {
	where := fmt.Sprintf("eval_time %s, alertname %s", te.EvalTime, te.Alertname)
	got := make([]map[string]string, len(active))
	for k, a := range active {
		got[k] = comparableLabels(a.Labels)
	}
	used := make([]bool, len(active))
	var problems []string
	for _, exp := range te.ExpAlerts {
		want := comparableLabels(exp.ExpLabels)
		found := -1
		for k := range active {
			if !used[k] && reflect.DeepEqual(got[k], want) {
				found = k
				break
			}
		}
		if found < 0 {
			problems = append(problems, fmt.Sprintf("%s: expected alert %s did not fire (firing: %s)", where, formatLabels(want), formatAll(got)))
			continue
		}
		used[found] = true
		a := active[found]
		if exp.ExpValue != nil && formatValue(*exp.ExpValue) != formatValue(a.Value) {
			problems = append(problems, fmt.Sprintf("%s: alert %s: value %s, want %s", where, formatLabels(want), formatValue(a.Value), formatValue(*exp.ExpValue)))
		}
		for _, k := range slices.Sorted(maps.Keys(exp.ExpAnnotations)) {
			if a.Annotations[k] != exp.ExpAnnotations[k] {
				problems = append(problems, fmt.Sprintf("%s: alert %s: annotation %s = %q, want %q", where, formatLabels(want), k, a.Annotations[k], exp.ExpAnnotations[k]))
			}
		}
	}
	for k := range active {
		if !used[k] {
			problems = append(problems, fmt.Sprintf("%s: unexpected alert %s (value %s)", where, formatLabels(got[k]), formatValue(active[k].Value)))
		}
	}
	return problems
}

func comparableLabels(l map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range l {
		if k != "alertname" && k != "tenant" {
			out[k] = v
		}
	}
	return out
}

func formatLabels(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+strconv.Quote(l[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func formatAll(ls []map[string]string) string {
	if len(ls) == 0 {
		return "none"
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = formatLabels(l)
	}
	return strings.Join(parts, " ")
}
