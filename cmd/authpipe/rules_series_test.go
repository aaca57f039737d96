package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// The promtool tests of the Prometheus rules (alerts/prometheus/tests/)
// feed series typed by hand. A series with a label the real metric lacks
// (the old `severity` on authpipe_threshold_breached), or without one it
// carries (`tenant`), tests a rule against data that never exists, and
// hides the rule's bugs. requireRuleTestSeriesMatch holds every authpipe_
// input series of those tests to a live scrape: same metric name, same
// label names (plus job and instance, which Prometheus adds), and for
// labels with a fixed set of values (code, reason, receiver, stage, le, …)
// a value the scrape shows. tenant and rule take any value: they are
// configuration.

var (
	seriesNameRE  = regexp.MustCompile(`^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?`)
	seriesLabelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"`)
)

// parseSeries splits `name{a="x", b="y"}` (a test series, or a scrape line)
// into its name and labels.
func parseSeries(s string) (string, map[string]string) {
	m := seriesNameRE.FindStringSubmatch(s)
	if m == nil {
		return "", nil
	}
	labels := map[string]string{}
	for _, l := range seriesLabelRE.FindAllStringSubmatch(m[2], -1) {
		labels[l[1]] = l[2]
	}
	return m[1], labels
}

// seriesShape is what a scrape shows of one sample name: its label names
// and the values each label takes.
type seriesShape struct {
	names  []string // sorted
	values map[string]map[string]bool
}

func scrapeShapes(t *testing.T, scrape string) map[string]*seriesShape {
	t.Helper()
	out := map[string]*seriesShape{}
	sc := bufio.NewScanner(strings.NewReader(scrape))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels := parseSeries(line)
		require.NotEmpty(t, name, "scrape line %q", line)
		names := make([]string, 0, len(labels))
		for k := range labels {
			names = append(names, k)
		}
		sort.Strings(names)
		sh := out[name]
		if sh == nil {
			sh = &seriesShape{names: names, values: map[string]map[string]bool{}}
			out[name] = sh
		}
		require.Equal(t, sh.names, names, "%s has one set of label names in the scrape", name)
		for k, v := range labels {
			if sh.values[k] == nil {
				sh.values[k] = map[string]bool{}
			}
			sh.values[k][v] = true
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// freeLabels take values from the configuration or from Prometheus.
var freeLabels = map[string]bool{"job": true, "instance": true, "tenant": true, "rule": true}

// seriesProblems returns what is wrong with one test input series.
func seriesProblems(shapes map[string]*seriesShape, series string) []string {
	name, labels := parseSeries(series)
	if !strings.HasPrefix(name, "authpipe_") {
		return nil // up, and other series Prometheus itself makes
	}
	sh, ok := shapes[name]
	if !ok {
		return []string{fmt.Sprintf("%s: authpipe exports no series named %s", series, name)}
	}
	var problems []string
	for k, v := range labels {
		switch {
		case k == "job" || k == "instance":
		case !slices.Contains(sh.names, k):
			problems = append(problems, fmt.Sprintf("%s: label %q: the real metric has no such label (it has %v)", series, k, sh.names))
		case !freeLabels[k] && !sh.values[k][v]:
			problems = append(problems, fmt.Sprintf("%s: %s=%q: the real metric never takes that value (it takes %v)", series, k, v, sortedSet(sh.values[k])))
		}
	}
	for _, k := range sh.names {
		if _, ok := labels[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s: label %q missing: every real series of %s has it", series, k, name))
		}
	}
	return problems
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// requireRuleTestSeriesMatch checks every input series of the promtool
// tests against scrape.
func requireRuleTestSeriesMatch(t *testing.T, scrape string) {
	t.Helper()
	shapes := scrapeShapes(t, scrape)
	files, err := filepath.Glob(repoRoot + "/alerts/prometheus/tests/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var problems []string
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var doc struct {
			Tests []struct {
				InputSeries []struct {
					Series string `yaml:"series"`
				} `yaml:"input_series"`
			} `yaml:"tests"`
		}
		require.NoError(t, yaml.Unmarshal(b, &doc), f)
		for _, tc := range doc.Tests {
			for _, in := range tc.InputSeries {
				checked++
				for _, p := range seriesProblems(shapes, in.Series) {
					problems = append(problems, filepath.Base(f)+": "+p)
				}
			}
		}
	}
	require.Positive(t, checked)
	require.Empty(t, problems, "promtool test series that authpipe's metrics never produce:\n%s", strings.Join(problems, "\n"))
}

// The checker itself: the old test input of AuthpipeThresholdBreached
// (a severity label, no tenant) is refused, the real shape is not.
func TestRuleTestSeriesChecker(t *testing.T) {
	shapes := scrapeShapes(t, `# HELP authpipe_threshold_breached x
# TYPE authpipe_threshold_breached gauge
authpipe_threshold_breached{rule="FailedLoginsPerIP",tenant="default"} 0
authpipe_auth0_requests_total{code="2xx",tenant="default"} 3
authpipe_auth0_requests_total{code="429",tenant="default"} 0
`)
	require.Empty(t, seriesProblems(shapes, `authpipe_threshold_breached{job="authpipe", instance="a:9464", rule="BruteForce", tenant="acme"}`))
	require.Empty(t, seriesProblems(shapes, `up{job="authpipe", instance="a:9464"}`))
	require.Empty(t, seriesProblems(shapes, `authpipe_auth0_requests_total{job="authpipe", instance="a:9464", code="429", tenant="acme"}`))
	old := seriesProblems(shapes, `authpipe_threshold_breached{job="authpipe", instance="authpipe-0:9464", rule="BruteForce", severity="critical"}`)
	require.Len(t, old, 2, "%v", old)
	require.Contains(t, strings.Join(old, "\n"), `label "severity": the real metric has no such label`)
	require.Contains(t, strings.Join(old, "\n"), `label "tenant" missing`)
	require.Len(t, seriesProblems(shapes, `authpipe_auth0_requests_total{job="authpipe", instance="a", code="4xx", tenant="acme"}`), 1, "a value the metric never takes")
	require.Len(t, seriesProblems(shapes, `authpipe_thresholds_breached{tenant="acme"}`), 1, "a name authpipe does not export")
}
