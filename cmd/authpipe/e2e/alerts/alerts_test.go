// Package alerts tests authpipe's alert paths end to end, as an operator
// runs them: real Prometheus 2.42 and Alertmanager 0.25 (Debian packages)
// with the shipped configurations, rewritten only for addresses (and
// Alertmanager's receivers, pointed at two recording web servers),
// `authpipe sim` with its scripted attacks, `authpipe run` and a real
// redis-server that is stopped for 90 s in the middle.
//
// It is slow (about four minutes, mostly waiting on the shipped timings),
// so it is a package of its own: `go test ./...` runs it beside the other
// slow packages.
package alerts

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

const repoRoot = "../../../.."

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

// notification is one webhook notification from Alertmanager (payload
// version 4), with the time it arrived.
type notification struct {
	At       time.Time
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	GroupKey string `json:"groupKey"`
	Alerts   []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		EndsAt      time.Time         `json:"endsAt"`
		Fingerprint string            `json:"fingerprint"`
	} `json:"alerts"`
}

// receiver records the notifications Alertmanager sends to one of its
// receivers.
type receiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []notification
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var n notification
		if err := json.NewDecoder(req.Body).Decode(&n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		n.At = time.Now()
		r.mu.Lock()
		r.got = append(r.got, n)
		r.mu.Unlock()
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) notifications() []notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]notification(nil), r.got...)
}

// firstFiring returns when an alert with all of labels first arrived
// firing, and the notification's alert labels.
func (r *receiver) firstFiring(labels map[string]string) (time.Time, map[string]string, bool) {
	for _, n := range r.notifications() {
		for _, a := range n.Alerts {
			if a.Status == "firing" && hasLabels(a.Labels, labels) {
				return n.At, a.Labels, true
			}
		}
	}
	return time.Time{}, nil, false
}

func (r *receiver) String() string {
	var b strings.Builder
	for _, n := range r.notifications() {
		fmt.Fprintf(&b, "%s %s %s:", n.At.Format("15:04:05.000"), n.Receiver, n.Status)
		for _, a := range n.Alerts {
			fmt.Fprintf(&b, " [%s %v startsAt %s]", a.Status, a.Labels, a.StartsAt.Format(time.RFC3339Nano))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func readYAML(t *testing.T, path string) *yaml.Node {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(b, &doc))
	return &doc
}

func setTargets(t *testing.T, staticConfigs *yaml.Node, addr string) {
	t.Helper()
	require.NotNil(t, staticConfigs)
	for _, sc := range staticConfigs.Content {
		targets := e2etest.MapValue(sc, "targets")
		require.NotNil(t, targets)
		targets.Content = []*yaml.Node{{Kind: yaml.ScalarNode, Value: addr}}
	}
}

// prometheusConfig is deploy/prometheus/prometheus.yml with its addresses
// rewritten: the scrape targets, the Alertmanager, and the rule files'
// directory (the same files, by absolute path).
func prometheusConfig(t *testing.T, self, authpipe, alertmanager string) string {
	t.Helper()
	doc := readYAML(t, repoRoot+"/deploy/prometheus/prometheus.yml")
	root := doc.Content[0]
	dir, err := filepath.Abs(repoRoot + "/deploy/prometheus")
	require.NoError(t, err)
	files := e2etest.MapValue(root, "rule_files")
	require.NotNil(t, files)
	for _, f := range files.Content {
		f.Value = filepath.Join(dir, f.Value)
	}
	ams := e2etest.MapValue(e2etest.MapValue(root, "alerting"), "alertmanagers")
	require.NotNil(t, ams)
	for _, am := range ams.Content {
		setTargets(t, e2etest.MapValue(am, "static_configs"), alertmanager)
	}
	jobs := map[string]string{"authpipe": authpipe, "prometheus": self, "alertmanager": alertmanager}
	scrapes := e2etest.MapValue(root, "scrape_configs")
	require.NotNil(t, scrapes)
	for _, sc := range scrapes.Content {
		job := e2etest.MapValue(sc, "job_name").Value
		addr, ok := jobs[job]
		require.True(t, ok, "scrape job %q of the shipped config", job)
		setTargets(t, e2etest.MapValue(sc, "static_configs"), addr)
	}
	out, err := yaml.Marshal(doc)
	require.NoError(t, err)
	return string(out)
}

// testGroupInterval replaces the shipped group_interval (5m), so that a
// duplicate notification, were there one, would arrive within the test.
const testGroupInterval = "10s"

// alertmanagerConfig is deploy/alertmanager/alertmanager.yml with its
// receivers pointed at webhooks (routes, group_wait, repeat_interval and
// inhibitions as shipped) and group_interval shortened to
// testGroupInterval.
func alertmanagerConfig(t *testing.T, webhooks map[string]string) string {
	t.Helper()
	doc := readYAML(t, repoRoot+"/deploy/alertmanager/alertmanager.yml")
	root := doc.Content[0]
	receivers := e2etest.MapValue(root, "receivers")
	require.NotNil(t, receivers)
	seen := 0
	for _, r := range receivers.Content {
		name := e2etest.MapValue(r, "name").Value
		hook, ok := webhooks[name]
		require.True(t, ok, "receiver %q of the shipped config", name)
		seen++
		var cfg yaml.Node
		require.NoError(t, yaml.Unmarshal([]byte(fmt.Sprintf("name: %s\nwebhook_configs:\n  - url: %s\n    send_resolved: true\n", name, hook)), &cfg))
		*r = *cfg.Content[0]
	}
	require.Equal(t, len(webhooks), seen)
	intervals := 0
	e2etest.WalkMappings(e2etest.MapValue(root, "route"), func(m *yaml.Node) {
		if v := e2etest.MapValue(m, "group_interval"); v != nil {
			v.Value = testGroupInterval
			intervals++
		}
	})
	require.Positive(t, intervals)
	out, err := yaml.Marshal(doc)
	require.NoError(t, err)
	return string(out)
}

// TestE2EAlertPaths: a critical threshold breach reaches the security
// receiver, once, severity critical, with its tenant, and never the
// operations receiver; Redis stopped for 90 s fires
// AuthpipeBufferUnreachable at operations within 2 minutes and resolves no
// threshold alert; after Redis returns there is no second notification of
// any breach; every line authpipe run prints is JSON.
func TestE2EAlertPaths(t *testing.T) {
	e2etest.NeedTool(t, "prometheus")
	e2etest.NeedTool(t, "prometheus-alertmanager")
	shipped, err := rules.Load(repoRoot + "/alerts/thresholds.yml")
	require.NoError(t, err)
	isThreshold := func(alertname string) bool { _, ok := shipped.Get(alertname); return ok }

	redisSrv := testredis.Start(t)
	security, operations := newReceiver(t), newReceiver(t)
	amAddr, promAddr, listen := e2etest.FreeAddr(t), e2etest.FreeAddr(t), e2etest.FreeAddr(t)
	am := e2etest.StartAlertmanagerOn(t, amAddr, alertmanagerConfig(t, map[string]string{
		"security": security.URL, "operations": operations.URL}))
	prom := e2etest.StartPrometheusOn(t, promAddr, prometheusConfig(t, promAddr, listen, amAddr))

	simStart := time.Now()
	sim := e2etest.StartSim(t, authpipeBin, "--rate", "20", "--seed", "13")
	const tenant = "acme"
	run := exec.Command(authpipeBin, "run")
	run.Dir = repoRoot // the default AUTHPIPE_RULES, alerts/thresholds.yml
	run.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"AUTH0_DOMAIN=" + sim.Auth0URL,
		"AUTH0_CLIENT_ID=" + e2etest.ClientID,
		"AUTH0_CLIENT_SECRET=" + e2etest.ClientSecret,
		"SEGMENT_WRITE_KEY=" + e2etest.WriteKey,
		"SEGMENT_ENDPOINT=" + sim.SegmentURL,
		"REDIS_URL=redis://" + redisSrv.Addr + "/0",
		"AUTHPIPE_TENANT=" + tenant,
		"AUTHPIPE_LISTEN=" + listen,
		"ALERTMANAGER_URL=" + am.URL,
	}
	authpipe := e2etest.Start(t, run, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("security notifications:\n%s", security)
			t.Logf("operations notifications:\n%s", operations)
			t.Logf("authpipe output:\n%s", e2etest.Tail(authpipe.Out.String(), 20000))
		}
	})
	authpipe.WaitHTTP(t, "http://"+listen+"/-/ready", 30*time.Second)

	// 1. The sim's credential stuffing (cycle 0, from 198.18.0.20 at +7s)
	// reaches security: critical, with its tenant, category and group.
	stuffing := map[string]string{"alertname": "CredentialStuffing", "ip": "198.18.0.20"}
	var firedAt time.Time
	var labels map[string]string
	e2etest.WaitFor(t, 90*time.Second, func() bool {
		var ok bool
		firedAt, labels, ok = security.firstFiring(stuffing)
		return ok
	}, func() string { return "CredentialStuffing at the security receiver:\n" + security.String() })
	t.Logf("CredentialStuffing reached security %s after the sim started", firedAt.Sub(simStart).Round(100*time.Millisecond))
	require.Equal(t, map[string]string{"alertname": "CredentialStuffing", "severity": "critical", "tenant": tenant,
		"category": "credential_stuffing", "ip": "198.18.0.20"}, labels)
	amStart := func() time.Time {
		for _, a := range am.Alerts(t) {
			if hasLabels(a.Labels, stuffing) {
				require.Equal(t, "active", a.Status.State)
				return a.StartsAt
			}
		}
		t.Fatalf("CredentialStuffing not active at Alertmanager: %+v", am.Alerts(t))
		return time.Time{}
	}
	startsAt := amStart()

	// 2. Redis goes away for 90 s.
	time.Sleep(1100 * time.Millisecond) // appendfsync everysec: nothing of before is lost
	redisSrv.Kill()
	down := time.Now()
	unreachable := map[string]string{"alertname": "AuthpipeBufferUnreachable", "tenant": tenant, "severity": "critical"}
	var paged time.Time
	e2etest.WaitFor(t, 2*time.Minute, func() bool {
		var ok bool
		paged, _, ok = operations.firstFiring(unreachable)
		return ok
	}, func() string { return "AuthpipeBufferUnreachable at the operations receiver:\n" + operations.String() })
	t.Logf("AuthpipeBufferUnreachable reached operations %s after Redis went away", paged.Sub(down).Round(100*time.Millisecond))
	require.Less(t, paged.Sub(down), 2*time.Minute)

	// Meanwhile authpipe still reports what it last knew: the breach and
	// the buffer's gauges, and says they are stale.
	scrape := e2etest.Scrape(t, listen)
	for _, want := range []string{
		fmt.Sprintf(`authpipe_buffer_up{tenant=%q} 0`, tenant),
		fmt.Sprintf(`authpipe_threshold_breached{rule="CredentialStuffing",tenant=%q} 1`, tenant),
		fmt.Sprintf(`authpipe_threshold_counts_live{tenant=%q} 0`, tenant),
		`authpipe_buffer_backlog_events{tenant="acme"}`,
		`authpipe_dead_letter_events{tenant="acme"}`,
	} {
		require.Contains(t, scrape, want)
	}
	time.Sleep(time.Until(down.Add(90 * time.Second)))
	require.NoError(t, redisSrv.Restart())
	back := time.Now()
	t.Logf("Redis back after %s", back.Sub(down).Round(100*time.Millisecond))

	// 3. After Redis is back: the counts go live again, and the breach
	// goes on as the same alert. Watch long enough for a duplicate to show:
	// a check round (30s), a re-send (1m) and several group intervals.
	e2etest.WaitFor(t, time.Minute, func() bool {
		return e2etest.MetricSum(t, listen, fmt.Sprintf(`authpipe_threshold_counts_live{tenant=%q}`, tenant)) == 1
	}, func() string { return "authpipe_threshold_counts_live 1 after Redis is back" })
	time.Sleep(time.Until(back.Add(75 * time.Second)))
	end := time.Now()
	require.Less(t, end.Sub(simStart), 5*time.Minute, "the test ends before any breach could end by itself (5m windows)")
	require.True(t, amStart().Equal(startsAt), "the breach keeps its start at Alertmanager")

	// No threshold alert resolved, none started twice, none at operations;
	// no health alert at security.
	starts := map[string]time.Time{}
	for _, n := range security.notifications() {
		for _, a := range n.Alerts {
			name := a.Labels["alertname"]
			require.True(t, isThreshold(name), "security got %v", a.Labels)
			require.Equal(t, "firing", a.Status, "a threshold alert resolved at %s: %v", n.At.Format(time.RFC3339), a.Labels)
			key := fmt.Sprint(a.Labels)
			if s, ok := starts[key]; ok {
				require.True(t, s.Equal(a.StartsAt), "%v notified with two starts: %s and %s", a.Labels, s, a.StartsAt)
			}
			starts[key] = a.StartsAt
			require.Equal(t, rulesSeverity(t, shipped, name), a.Labels["severity"], "%v", a.Labels)
			require.Equal(t, tenant, a.Labels["tenant"])
		}
	}
	for _, n := range operations.notifications() {
		for _, a := range n.Alerts {
			// Health alerts only: none about a breach (the old
			// AuthpipeThresholdBreached{rule=…} came this way too).
			require.True(t, strings.HasPrefix(a.Labels["alertname"], "Authpipe"), "operations got %v", a.Labels)
			require.Empty(t, a.Labels["rule"], "operations got a breach: %v", a.Labels)
			require.NotContains(t, a.Labels["alertname"], "Breach", "operations got a breach: %v", a.Labels)
		}
	}
	// No notification repeats the one before it in its group: each says
	// something new (repeat_interval is 1h or more).
	requireNoRepeats(t, security)
	requireNoRepeats(t, operations)
	// Prometheus alerts on no breach.
	for _, a := range prom.Alerts(t) {
		require.False(t, isThreshold(a.Labels["alertname"]) || a.Labels["rule"] != "", "Prometheus alerts on a breach: %v", a.Labels)
	}

	// Every line authpipe run printed is JSON (go-redis' too).
	out := authpipe.Out.String()
	require.Contains(t, out, `"component":"go-redis"`, "go-redis complained while Redis was down, through slog")
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &v), "not a JSON line: %s", line)
	}
	for _, s := range []string{e2etest.ClientSecret, e2etest.WriteKey} {
		require.NotContains(t, out, s)
		require.NotContains(t, sim.Out.String(), s)
	}
	t.Logf("%d notifications at security, %d at operations", len(security.notifications()), len(operations.notifications()))
}

func rulesSeverity(t *testing.T, rs *rules.Set, name string) string {
	t.Helper()
	r, ok := rs.Get(name)
	require.True(t, ok, name)
	return r.Severity
}

// requireNoRepeats fails if a notification of a group carries the same
// alerts, in the same states, as the group's notification before it.
func requireNoRepeats(t *testing.T, r *receiver) {
	t.Helper()
	last := map[string]string{}
	for _, n := range r.notifications() {
		var states []string
		for _, a := range n.Alerts {
			states = append(states, a.Fingerprint+"="+a.Status+"@"+a.StartsAt.UTC().Format(time.RFC3339Nano))
		}
		sort.Strings(states)
		key := strings.Join(states, " ")
		require.NotEqual(t, last[n.GroupKey], key, "a repeated notification at %s:\n%s", n.At.Format(time.RFC3339), r)
		last[n.GroupKey] = key
	}
}
