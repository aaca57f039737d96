package main

// Tests of what the container deployment relies on: the metric names the
// Grafana dashboard and the Prometheus rules use are the ones a live
// authpipe exports, its scrape passes `promtool check metrics`, the
// dashboard is well formed, `authpipe healthcheck` and `authpipe sim` work,
// and the Dockerfile's build flags inject the version into a static binary.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/testredis"
)

const (
	repoRoot      = "../.."
	dashboardPath = repoRoot + "/deploy/grafana/dashboards/authpipe.json"
)

func needTool(t *testing.T, name string) string { return e2etest.NeedTool(t, name) }

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
	promtool := needTool(t, "promtool")
	rules, err := filepath.Glob(repoRoot + "/alerts/prometheus/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, rules)
	referenced := referencedMetrics(t, append(rules, dashboardPath)...)
	require.Contains(t, referenced, "authpipe_threshold_breached", "the regex finds the names")
	require.Contains(t, referenced, "authpipe_auth0_events_by_outcome_total")

	h := newHarness(t, testredis.Addr(t))
	// The admin API on: the audit trail's metrics (AuthpipeAuditWriteFailing)
	// exist only with it.
	h.extraEnv = append(h.extraEnv, "AUTHPIPE_ADMIN_STATIC_TOKEN="+e2eStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG="+filepath.Join(t.TempDir(), "audit.jsonl"))
	ids := h.addEvents(300)
	p := h.start()
	h.waitReady(p, 20*time.Second)
	h.waitDelivered(ids, 60*time.Second)
	scrape := e2etest.Scrape(t, h.listen)

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

func TestHealthcheckCommand(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/-/healthy" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	closed := freeAddr(t)

	cases := []struct {
		name   string
		status int
		args   []string
		want   int
	}{
		{"healthy", http.StatusOK, []string{srv.URL + "/-/healthy"}, 0},
		{"unhealthy status", http.StatusServiceUnavailable, []string{srv.URL + "/-/healthy"}, 1},
		{"wrong path", http.StatusOK, []string{srv.URL + "/nope"}, 1},
		{"nothing listening", http.StatusOK, []string{"--timeout", "1s", "http://" + closed + "/-/healthy"}, 1},
		{"two URLs", http.StatusOK, []string{srv.URL, srv.URL}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			var stdout, stderr bytes.Buffer
			got := cli(append([]string{"healthcheck"}, tc.args...), &stdout, &stderr)
			require.Equal(t, tc.want, got, "stdout %q stderr %q", stdout.String(), stderr.String())
		})
	}
}

func TestHealthURL(t *testing.T) {
	cases := []struct{ listen, want string }{
		{"", "http://127.0.0.1:9464/-/healthy"},
		{":9464", "http://127.0.0.1:9464/-/healthy"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/-/healthy"},
		{"[::]:8080", "http://127.0.0.1:8080/-/healthy"},
		{"10.1.2.3:9000", "http://10.1.2.3:9000/-/healthy"},
		{"[::1]:9000", "http://[::1]:9000/-/healthy"},
	}
	for _, tc := range cases {
		got, err := healthURL(tc.listen)
		require.NoError(t, err, tc.listen)
		require.Equal(t, tc.want, got, tc.listen)
	}
	_, err := healthURL("9464")
	require.ErrorContains(t, err, "AUTHPIPE_LISTEN")
}

// syncBuf is a bytes.Buffer safe for concurrent writers and a reader.
type syncBuf = e2etest.SyncBuf

// simProc is a running `authpipe sim`.
type simProc struct {
	*e2etest.Sim
	auth0URL, segURL string
	out              *syncBuf
}

// startSim runs `authpipe sim` on loopback ports with the e2e credentials
// and waits until it prints where it listens.
func startSim(t *testing.T, args ...string) *simProc {
	t.Helper()
	s := e2etest.StartSim(t, authpipeBin, args...)
	return &simProc{Sim: s, auth0URL: s.Auth0URL, segURL: s.SegmentURL, out: s.Out}
}

func (s *simProc) stats(t *testing.T) simStats {
	t.Helper()
	resp, err := http.Get(s.auth0URL + "/-/stats")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st simStats
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func TestSimCommandServesTrafficAndStopsOnSIGTERM(t *testing.T) {
	s := startSim(t, "--rate", "50", "--seed", "7")
	for _, u := range []string{s.auth0URL, s.segURL} {
		resp, err := http.Get(u + "/-/healthy")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, u)
	}
	began := time.Now()
	// The scripted brute force (30 failed logins from one IP) comes at +3s..+6s.
	require.Eventually(t, func() bool { return s.stats(t).Generated >= 30+50*6 }, 20*time.Second, 100*time.Millisecond)

	// It is a faithful Auth0: wrong credentials are refused, right ones get
	// a token that reads the generated logs in checkpoint mode.
	token := func(secret string) (int, string) {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {e2eClientID},
			"client_secret": {secret}, "audience": {s.auth0URL + "/api/v2/"}}
		resp, err := http.PostForm(s.auth0URL+"/oauth/token", form)
		require.NoError(t, err)
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return resp.StatusCode, tok.AccessToken
	}
	code, _ := token("wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	code, tok := token(e2eClientSecret)
	require.Equal(t, http.StatusOK, code)

	from := auth0log.CheckpointAt(began.Add(-time.Minute))
	bruteForce := 0
	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, s.auth0URL+"/api/v2/logs?take=100&from="+from, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var page []struct {
			LogID string `json:"log_id"`
			Type  string `json:"type"`
			IP    string `json:"ip"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for _, l := range page {
			if l.Type == "fp" && l.IP == "192.0.2.10" { // attacks[0] of cycle 0
				bruteForce++
			}
			from = l.LogID
		}
		if len(page) < 100 {
			break
		}
	}
	require.Equal(t, 30, bruteForce, "the scripted brute force is in the Auth0 logs")

	require.NoError(t, s.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("authpipe sim did not stop within 5 s of SIGTERM")
	}
	require.NoError(t, s.Err())
	out := s.out.String()
	require.Contains(t, out, "authpipe sim stopped: generated")
	require.NotContains(t, out, e2eClientSecret)
	require.NotContains(t, out, e2eWriteKey)
}

func TestSimCommandNeedsCredentials(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(authpipeBin, "sim", "--auth0-listen", "127.0.0.1:0", "--segment-listen", "127.0.0.1:0")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 2, exit.ExitCode())
	require.Contains(t, stderr.String(), "AUTH0_CLIENT_SECRET")
}

// The version and revision TestMain injects into authpipeBin with the
// Dockerfile's -ldflags.
const (
	e2eVersion  = "9.8.7-e2e"
	e2eRevision = "0123abcd"
)

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
