// Package deploy tests what the container deployment relies on: the
// metric names the Grafana dashboard and the Prometheus rules use are the
// ones a live authpipe exports, its scrape passes `promtool check metrics`
// and matches the series the rules' promtool tests feed, the dashboard is
// well formed and every query of it returns data on a real Prometheus
// scraping authpipe (which loads and evaluates every shipped rule), and
// the Dockerfile's build flags inject the version.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// The version and revision TestMain injects into authpipeBin with the
// Dockerfile's -ldflags.
const (
	e2eVersion  = "9.8.7-e2e"
	e2eRevision = "0123abcd"
)

var authpipeBin string

func TestMain(m *testing.M) {
	// The version and revision are injected as the Dockerfile does.
	os.Exit(e2etest.Main(m, "-X main.version="+e2eVersion+" -X main.revision="+e2eRevision, &authpipeBin))
}

const (
	repoRoot      = "../../../.."
	dashboardPath = repoRoot + "/deploy/grafana/dashboards/authpipe.json"
)

var metricNameRE = regexp.MustCompile(`authpipe_[a-z0-9_]+`)

// referencedMetrics returns the authpipe_ metric names in files, with the
// histogram series suffixes stripped, each mapped to a file that uses it.
func referencedMetrics(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, name := range metricNameRE.FindAllString(string(b), -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				name = strings.TrimSuffix(name, suffix)
			}
			out[name] = filepath.Base(f)
		}
	}
	return out
}

// exportedFamilies returns the metric families of a scrape, by name.
func exportedFamilies(scrape string) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(scrape))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

func TestDeployReferencedMetricsAreExportedAndLintClean(t *testing.T) {
	promtool := e2etest.NeedTool(t, "promtool")
	rules, err := filepath.Glob(repoRoot + "/alerts/prometheus/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, rules)
	referenced := referencedMetrics(t, append(rules, dashboardPath)...)
	require.Contains(t, referenced, "authpipe_threshold_breached", "the regex finds the names")
	require.Contains(t, referenced, "authpipe_auth0_events_by_outcome_total")

	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	// The admin API on: the audit trail's metrics (AuthpipeAuditWriteFailing)
	// exist only with it.
	h.ExtraEnv = append(h.ExtraEnv, "AUTHPIPE_ADMIN_STATIC_TOKEN="+e2etest.AdminStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG="+filepath.Join(t.TempDir(), "audit.jsonl"),
		// The Log Streams receiver on: its metrics (AuthpipeStreamSilent,
		// AuthpipeStreamMissingEvents, the dashboard's Log Streams row)
		// exist only with it.
		"AUTHPIPE_STREAM_LISTEN="+e2etest.FreeAddr(t),
		"AUTH0_STREAM_TOKEN=Bearer deploy-test-stream-token-0123456789abcdef")
	ids := h.AddEvents(300)
	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	h.WaitDelivered(ids, 60*time.Second)
	scrape := e2etest.Scrape(t, h.Listen)

	require.Contains(t, scrape, `authpipe_build_info{goversion="`, "build info")
	require.Regexp(t, `authpipe_build_info\{[^}]*revision="`+e2eRevision+`",version="`+e2eVersion+`"\} 1`, scrape)

	exported := exportedFamilies(scrape)
	var missing []string
	for name, file := range referenced {
		if _, ok := exported[name]; !ok {
			missing = append(missing, name+" (used in "+file+")")
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "metrics referenced by the dashboard or the Prometheus rules that authpipe does not export")

	// promtool check metrics lints the live scrape: names, units, help.
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s", out)
	require.Empty(t, strings.TrimSpace(string(out)), "promtool check metrics reports problems")

	// The rules' promtool tests feed series of the shapes this scrape has.
	requireRuleTestSeriesMatch(t, scrape)
}

// dashboard is the part of a Grafana dashboard the checks read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name    string `json:"name"`
			Type    string `json:"type"`
			Query   any    `json:"query"`
			Current struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	require.NoError(t, dec.Decode(&d))
	return d
}

// dashboardExprs returns every PromQL expression of the dashboard's panels
// with its variables replaced by values that match everything.
func dashboardExprs(d dashboard) map[string]string {
	r := strings.NewReplacer(`"$job"`, `".+"`, `"$tenant"`, `".+"`, "$__rate_interval", "1m")
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title+"/"+tg.RefID] = r.Replace(tg.Expr)
		}
	}
	return out
}

func TestDeployDashboardIsWellFormed(t *testing.T) {
	d := loadDashboard(t)
	require.Equal(t, "authpipe", d.UID)
	require.NotEmpty(t, d.Title)

	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	require.True(t, vars["datasource"] && vars["job"] && vars["tenant"], "variables datasource, job and tenant")

	// The provisioned datasource is the variable's default.
	prov, err := os.ReadFile(repoRoot + "/deploy/grafana/provisioning/datasources/prometheus.yml")
	require.NoError(t, err)
	require.Contains(t, string(prov), "uid: prometheus")
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			require.Equal(t, "prometheus", v.Current.Value)
		}
	}

	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "panel id %d twice", p.ID)
		ids[p.ID] = true
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
		require.Positive(t, p.GridPos.W, p.Title)
		require.Positive(t, p.GridPos.H, p.Title)
		if p.Type == "row" {
			continue
		}
		titles[p.Title] = true
		require.NotNil(t, p.Datasource, "panel %q has no datasource", p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, "panel %q: use the datasource variable", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			require.Contains(t, tg.Expr, `job=~"$job"`, "panel %q, query %s: filter by the job variable", p.Title, tg.RefID)
		}
	}
	// What the dashboard is for (issue 6).
	for _, want := range []string{"Throughput per stage", "Checkpoint lag against retention", "Buffer backlog",
		"Dead letters", "Auth0 log requests and 429s", "Auth events by outcome", "Threshold breaches"} {
		require.True(t, titles[want], "panel %q", want)
	}
	exprs := strings.Join(slices.Collect(func(yield func(string) bool) {
		for _, e := range dashboardExprs(d) {
			if !yield(e) {
				return
			}
		}
	}), "\n")
	for _, want := range []string{`authpipe_auth0_requests_total{job=~".+",tenant=~".+"}`, "authpipe_auth0_events_by_outcome_total",
		"authpipe_auth0_log_retention_seconds", "authpipe_stage_events_received_total", "authpipe_threshold_breached",
		"authpipe_auth0_lag_alert_ratio"} {
		require.Contains(t, exprs, want)
	}
	// The lag warning is where AuthpipeCheckpointLagHigh fires
	// (AUTHPIPE_LAG_ALERT_RATIO), not at a fixed share.
	require.NotRegexp(t, `(^|[^.0-9])0\.5 \*`, exprs)
}

// TestDockerfileBuildFlags checks the Dockerfile's build and runtime
// settings, and that its -ldflags (used by TestMain) reach `authpipe
// version` and authpipe_build_info. That the binary is static was checked
// by hand (CGO_ENABLED=0; building again here costs minutes on 2 cores).
func TestDockerfileBuildFlags(t *testing.T) {
	dockerfile, err := os.ReadFile(repoRoot + "/Dockerfile")
	require.NoError(t, err)
	for _, want := range []string{"CGO_ENABLED=0", "-X main.version=${VERSION}", "-X main.revision=${REVISION}",
		"COPY alerts/ /app/alerts/", "WORKDIR /app", "HEALTHCHECK", `"healthcheck"`, "USER 65532:65532",
		"FROM gcr.io/distroless/static-debian12:nonroot"} {
		require.Contains(t, string(dockerfile), want, "Dockerfile")
	}
	ignore, err := os.ReadFile(repoRoot + "/.dockerignore")
	require.NoError(t, err)
	for _, want := range []string{"\n*\n", "!alerts\n", "!cmd\n", "!internal\n", "!go.mod\n", "!go.sum\n"} {
		require.Contains(t, string(ignore), want, ".dockerignore: only the sources go into the build context")
	}

	version, err := exec.Command(authpipeBin, "version").Output()
	require.NoError(t, err)
	require.Contains(t, string(version), "authpipe "+e2eVersion+" (revision "+e2eRevision+",")

	// The shipped rules are found at the default AUTHPIPE_RULES from the
	// image's layout (working directory /app, rules in /app/alerts).
	app := t.TempDir()
	require.NoError(t, os.CopyFS(filepath.Join(app, "alerts"), os.DirFS(repoRoot+"/alerts")))
	check := exec.Command(authpipeBin, "rules", "check", "alerts/thresholds.yml")
	check.Dir = app
	out, err := check.CombinedOutput()
	require.NoError(t, err, "%s", out)
}

func TestE2EPrometheusScrapesAuthpipe(t *testing.T) {
	e2etest.NeedTool(t, "prometheus")
	start := time.Now()
	// The sim also pushes every log to authpipe's Log Streams receiver, as
	// Auth0's custom webhook stream does: the dashboard's Log Streams row
	// has data.
	const streamToken = "Bearer deploy-e2e-stream-token-0123456789abcdef"
	streamAddr := e2etest.FreeAddr(t)
	s := e2etest.StartSim(t, authpipeBin, "--rate", "20", "--seed", "11",
		"--stream-url", "http://"+streamAddr+"/auth0/logs", "--stream-token", streamToken)
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	h.Auth0URL, h.SegmentURL = s.Auth0URL, s.SegmentURL // authpipe polls the sim process, not the in-process sims
	h.ExtraEnv = append(h.ExtraEnv, "AUTHPIPE_STREAM_LISTEN="+streamAddr, "AUTH0_STREAM_TOKEN="+streamToken)
	p := h.Start()
	prom, nrules := e2etest.StartPrometheusWithShippedRules(t, h.Listen)
	h.WaitReady(p, 20*time.Second)

	var health, lastErr string
	e2etest.WaitFor(t, 20*time.Second, func() bool {
		health, lastErr = prom.TargetHealth(t, "authpipe")
		return health == "up"
	}, func() string {
		return fmt.Sprintf("authpipe target up in /api/v1/targets: health %q, last error %q", health, lastErr)
	})

	// The sim's brute force (30 failed logins from one IP at +3s) breaches
	// FailedLoginsPerIP: Prometheus sees the breach, with the tenant.
	breached := fmt.Sprintf(`authpipe_threshold_breached{job="authpipe", rule="FailedLoginsPerIP", tenant=%q} == 1`, h.Tenant)
	e2etest.WaitFor(t, 45*time.Second, func() bool { return len(prom.Query(t, breached)) == 1 }, func() string {
		return fmt.Sprintf("%s in Prometheus; authpipe says %v", breached, h.Metric(`authpipe_threshold_breached{rule="FailedLoginsPerIP"`))
	})
	t.Logf("breach seen by Prometheus %s after the sim started", time.Since(start).Round(100*time.Millisecond))

	// Every shipped rule loaded and evaluates without error on live data,
	// and none of them alerts on the breach: authpipe notifies it itself,
	// once (docs/runbook.md, "Alert paths").
	rs, err := rules.Load(repoRoot + "/alerts/thresholds.yml")
	require.NoError(t, err)
	loaded := prom.Rules(t)
	for _, r := range loaded {
		require.NotEqual(t, "err", r.Health, "rule %s: %s", r.Name, r.LastError)
		_, isThreshold := rs.Get(r.Name)
		require.False(t, isThreshold, "a Prometheus rule named like threshold rule %s", r.Name)
	}
	require.Equal(t, nrules, len(loaded), "every shipped rule is loaded")
	for _, r := range e2etest.LoadRuleFile(t, repoRoot+"/alerts/prometheus/authpipe.rules.yml") {
		require.NotContains(t, r.Expr, "authpipe_threshold_breached", "rule %s re-alerts on the breach gauge", r.Alert)
	}
	time.Sleep(3 * time.Second) // a few evaluations with the breach in place
	for _, a := range prom.Alerts(t) {
		require.NotEqual(t, "AuthpipeDown", a.Labels["alertname"], "authpipe is up")
		_, isThreshold := rs.Get(a.Labels["alertname"])
		require.False(t, isThreshold || a.Labels["rule"] != "", "Prometheus alerts on a breach: %v", a.Labels)
	}
	health, _ = prom.TargetHealth(t, "authpipe")
	require.Equal(t, "up", health)
	require.Len(t, prom.Query(t, `up{job="authpipe"} == 1`), 1)

	// Every dashboard query runs on this Prometheus and returns data, once
	// there are enough scrapes for rate() and increase().
	e2etest.WaitFor(t, 20*time.Second, func() bool {
		return len(prom.Query(t, `count_over_time(up{job="authpipe"}[1m]) >= 5`)) == 1
	}, func() string { return "5 scrapes of authpipe" })
	exprs := dashboardExprs(loadDashboard(t))
	names := make([]string, 0, len(exprs))
	for name := range exprs {
		names = append(names, name)
	}
	sort.Strings(names)
	var empty []string
	for _, name := range names {
		if len(prom.Query(t, exprs[name])) == 0 {
			empty = append(empty, name+": "+exprs[name])
		}
	}
	require.Empty(t, empty, "dashboard queries without data:\n%s", strings.Join(empty, "\n"))

	// Nothing secret in what the processes printed.
	for _, out := range []string{s.Out.String(), prom.Out.String()} {
		require.NotContains(t, out, e2etest.ClientSecret)
		require.NotContains(t, out, e2etest.WriteKey)
		require.NotContains(t, out, strings.TrimPrefix(streamToken, "Bearer "))
	}
	h.RequireNoSecretsLogged()
}

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
