package main

// End to end with real processes: redis-server, `authpipe sim`, `authpipe
// run` and a real Prometheus (Debian package, 2.42) scraping authpipe every
// second and evaluating the shipped alerting rules: every rule loads and
// evaluates on live data, every dashboard query returns data, and the sim's
// scripted brute force shows as authpipe_threshold_breached with its
// tenant while no Prometheus alert repeats it (authpipe sends breaches to
// Alertmanager itself: cmd/authpipe/e2e/alerts tests that path).

import (
	"fmt"
	"os"
	"path/filepath"
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

// startPrometheus runs Prometheus scraping target every second with the
// shipped rule files (testRules), and returns it with the number of rules.
func startPrometheus(t *testing.T, target string) (*e2etest.Prometheus, int) {
	t.Helper()
	rulesDir := t.TempDir()
	rules := testRules(t, rulesDir)
	p := e2etest.StartPrometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s/*.yml
scrape_configs:
  - job_name: authpipe
    static_configs:
      - targets: ['%s']
`, rulesDir, target))
	return p, rules
}

// testRules copies the shipped Prometheus rule files into dir, with the
// `for:` of AuthpipeAuditWriteFailing (shipped: 3m) set to 0s so the tests
// do not wait minutes. Every other rule is as shipped.
func testRules(t *testing.T, dir string) (rules int) {
	t.Helper()
	files, err := filepath.Glob(repoRoot + "/alerts/prometheus/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	patched := map[string]bool{"AuthpipeAuditWriteFailing": false}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal(b, &doc))
		rules += len(loadRuleFile(t, f))
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

// promRule is the part of a Prometheus alerting rule the tests read.
type promRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

func loadRuleFile(t *testing.T, path string) []promRule {
	t.Helper()
	var file struct {
		Groups []struct {
			Rules []promRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &file), path)
	var out []promRule
	for _, g := range file.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	e2etest.WaitFor(t, timeout, cond, msg)
}

func TestE2EPrometheusScrapesAuthpipe(t *testing.T) {
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
		health, lastErr = prom.TargetHealth(t, "authpipe")
		return health == "up"
	}, func() string {
		return fmt.Sprintf("authpipe target up in /api/v1/targets: health %q, last error %q", health, lastErr)
	})

	// The sim's brute force (30 failed logins from one IP at +3s) breaches
	// FailedLoginsPerIP: Prometheus sees the breach, with the tenant.
	breached := fmt.Sprintf(`authpipe_threshold_breached{job="authpipe", rule="FailedLoginsPerIP", tenant=%q} == 1`, h.tenant)
	waitFor(t, 45*time.Second, func() bool { return len(prom.Query(t, breached)) == 1 }, func() string {
		return fmt.Sprintf("%s in Prometheus; authpipe says %v", breached, h.metric(`authpipe_threshold_breached{rule="FailedLoginsPerIP"`))
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
	for _, r := range loadRuleFile(t, repoRoot+"/alerts/prometheus/authpipe.rules.yml") {
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
	waitFor(t, 20*time.Second, func() bool {
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
	for _, out := range []string{s.out.String(), prom.Out.String()} {
		require.NotContains(t, out, e2eClientSecret)
		require.NotContains(t, out, e2eWriteKey)
	}
	h.requireNoSecretsLogged()
}
