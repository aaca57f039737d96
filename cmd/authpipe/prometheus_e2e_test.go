package main

// End to end with real processes: redis-server, `authpipe sim`, `authpipe
// run` and a real Prometheus (Debian package, 2.42) scraping authpipe every
// second and evaluating the shipped alerting rules. The sim's scripted brute
// force must make Prometheus fire AuthpipeThresholdBreached.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/testredis"
)

// testRules copies the shipped Prometheus rule files into dir, with the
// `for:` of AuthpipeThresholdBreached (shipped: 1m) and of
// AuthpipeAuditWriteFailing (shipped: 3m) set to 0s so the tests do not
// wait minutes. Every other rule is as shipped.
func testRules(t *testing.T, dir string) (rules int) {
	t.Helper()
	files, err := filepath.Glob(repoRoot + "/alerts/prometheus/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	patched := map[string]bool{"AuthpipeThresholdBreached": false, "AuthpipeAuditWriteFailing": false}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal(b, &doc))
		var file struct {
			Groups []struct {
				Rules []yaml.Node `yaml:"rules"`
			} `yaml:"groups"`
		}
		require.NoError(t, doc.Decode(&file))
		for _, g := range file.Groups {
			rules += len(g.Rules)
		}
		walkMappings(&doc, func(m *yaml.Node) {
			a := mapValue(m, "alert")
			if a == nil {
				return
			}
			if _, ok := patched[a.Value]; !ok {
				return
			}
			v := mapValue(m, "for")
			require.NotNil(t, v, "%s has a for:", a.Value)
			v.Value = "0s"
			patched[a.Value] = true
		})
		out, err := yaml.Marshal(&doc)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(f)), out, 0o644))
	}
	for name, ok := range patched {
		require.True(t, ok, "%s found in the shipped rules", name)
	}
	return rules
}

func walkMappings(n *yaml.Node, fn func(*yaml.Node)) {
	if n.Kind == yaml.MappingNode {
		fn(n)
	}
	for _, c := range n.Content {
		walkMappings(c, fn)
	}
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// promServer is a running Prometheus.
type promServer struct {
	url  string
	done chan struct{}
	out  *syncBuf
}

func startPrometheus(t *testing.T, target string) (*promServer, int) {
	t.Helper()
	bin := needTool(t, "prometheus")
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	require.NoError(t, os.Mkdir(rulesDir, 0o755))
	nrules := testRules(t, rulesDir)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s/*.yml
scrape_configs:
  - job_name: authpipe
    static_configs:
      - targets: ['%s']
`, rulesDir, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(config), 0o644))

	listen := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--log.level=warn")
	p := &promServer{url: "http://" + listen, done: make(chan struct{}), out: &syncBuf{}}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", tail(p.out.String(), 6000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("prometheus exited at start: %v\n%s", waitErr, p.out.String())
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nrules
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("prometheus not ready within 30 s:\n%s", p.out.String())
	return nil, 0
}

// api GETs a Prometheus API path and decodes its data into v.
func (p *promServer) api(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "%s: %s", path, body.Error)
	require.NoError(t, json.Unmarshal(body.Data, v))
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promServer) alerts(t *testing.T) []promAlert {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	p.api(t, "/api/v1/alerts", &data)
	return data.Alerts
}

func (p *promServer) targetHealth(t *testing.T, job string) (health, lastError string) {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	p.api(t, "/api/v1/targets?state=active", &data)
	for _, tg := range data.ActiveTargets {
		if tg.Labels["job"] == job {
			return tg.Health, tg.LastError
		}
	}
	return "absent", ""
}

func (p *promServer) query(t *testing.T, expr string) []json.RawMessage {
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	p.api(t, "/api/v1/query?query="+url.QueryEscape(expr), &data)
	return data.Result
}

// waitFor polls cond until it holds or timeout passes, then fails with msg().
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestE2EPrometheusScrapesAuthpipeAndFiresThresholdAlert(t *testing.T) {
	needTool(t, "prometheus")
	start := time.Now()
	s := startSim(t, "--rate", "20", "--seed", "11")
	h := newHarness(t, testredis.Addr(t))
	h.auth0URL, h.segURL = s.auth0URL, s.segURL // authpipe polls the sim process, not the in-process sims
	p := h.start()
	prom, nrules := startPrometheus(t, h.listen)
	h.waitReady(p, 20*time.Second)

	var health, lastErr string
	waitFor(t, 20*time.Second, func() bool {
		health, lastErr = prom.targetHealth(t, "authpipe")
		return health == "up"
	}, func() string {
		return fmt.Sprintf("authpipe target up in /api/v1/targets: health %q, last error %q", health, lastErr)
	})

	// The sim's brute force (30 failed logins from one IP at +3s) breaches
	// FailedLoginsPerIP; Prometheus sees authpipe_threshold_breached and
	// fires AuthpipeThresholdBreached.
	var alerts []promAlert
	firing := func(name, rule string) bool {
		for _, a := range alerts {
			if a.Labels["alertname"] == name && a.Labels["rule"] == rule && a.State == "firing" {
				return true
			}
		}
		return false
	}
	waitFor(t, 45*time.Second, func() bool {
		alerts = prom.alerts(t)
		return firing("AuthpipeThresholdBreached", "FailedLoginsPerIP")
	}, func() string {
		return fmt.Sprintf("AuthpipeThresholdBreached{rule=FailedLoginsPerIP} firing in /api/v1/alerts; alerts: %+v; "+
			"authpipe_threshold_breached{rule=\"FailedLoginsPerIP\"} = %v", alerts,
			h.metric(`authpipe_threshold_breached{rule="FailedLoginsPerIP"`))
	})
	t.Logf("alert firing %s after the sim started", time.Since(start).Round(100*time.Millisecond))
	for _, a := range alerts {
		require.NotEqual(t, "AuthpipeDown", a.Labels["alertname"], "authpipe is up")
	}
	health, _ = prom.targetHealth(t, "authpipe")
	require.Equal(t, "up", health)
	require.Len(t, prom.query(t, `up{job="authpipe"} == 1`), 1)

	// Every shipped rule loaded and evaluates without error on live data.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	prom.api(t, "/api/v1/rules", &rules)
	loaded := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			loaded++
			require.NotEqual(t, "err", r.Health, "rule %s: %s", r.Name, r.LastError)
		}
	}
	require.Equal(t, nrules, loaded, "every shipped rule is loaded")

	// Every dashboard query runs on this Prometheus and returns data, once
	// there are enough scrapes for rate() and increase().
	waitFor(t, 20*time.Second, func() bool {
		return len(prom.query(t, `count_over_time(up{job="authpipe"}[1m]) >= 5`)) == 1
	}, func() string { return "5 scrapes of authpipe" })
	exprs := dashboardExprs(loadDashboard(t))
	names := make([]string, 0, len(exprs))
	for name := range exprs {
		names = append(names, name)
	}
	sort.Strings(names)
	var empty []string
	for _, name := range names {
		if len(prom.query(t, exprs[name])) == 0 {
			empty = append(empty, name+": "+exprs[name])
		}
	}
	require.Empty(t, empty, "dashboard queries without data:\n%s", strings.Join(empty, "\n"))

	// Nothing secret in what the processes printed.
	for _, out := range []string{s.out.String(), prom.out.String()} {
		require.NotContains(t, out, e2eClientSecret)
		require.NotContains(t, out, e2eWriteKey)
	}
	h.requireNoSecretsLogged()
}
