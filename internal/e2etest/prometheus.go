package e2etest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// Prometheus is a running Prometheus (Debian package prometheus, 2.42).
type Prometheus struct {
	*Proc
	URL string
}

// StartPrometheus runs Prometheus with the configuration config (YAML; a
// relative rule_files path is relative to a temporary directory, so give
// absolute ones) on a free port and waits until it is ready.
func StartPrometheus(t *testing.T, config string) *Prometheus {
	t.Helper()
	return StartPrometheusOn(t, FreeAddr(t), config)
}

// StartPrometheusOn is StartPrometheus listening on listen (a free address
// the configuration names, e.g. as the target of its own scrape job).
func StartPrometheusOn(t *testing.T, listen, config string) *Prometheus {
	t.Helper()
	p, url := startDaemon(t, "prometheus", listen, config, func(cfg, data, listen string) []string {
		return []string{"--config.file=" + cfg, "--storage.tsdb.path=" + data, "--web.listen-address=" + listen, "--log.level=warn"}
	})
	return &Prometheus{Proc: p, URL: url}
}

// startDaemon writes config to a temporary directory, runs the tool with
// the arguments args gives for that file, a data directory and listen,
// and waits until its /-/ready answers. It returns the process and its
// base URL.
func startDaemon(t *testing.T, tool, listen, config string, args func(cfg, data, listen string) []string) (*Proc, string) {
	t.Helper()
	bin := NeedTool(t, tool)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o644))
	p := Start(t, exec.Command(bin, args(cfg, filepath.Join(dir, "data"), listen)...), nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", tool, Tail(p.Out.String(), 6000))
		}
	})
	url := "http://" + listen
	p.WaitHTTP(t, url+"/-/ready", 30*time.Second)
	return p, url
}

// API GETs a Prometheus API path and decodes its data into v.
func (p *Prometheus) API(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.URL + path)
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

// PromAlert is an alert as /api/v1/alerts lists it.
type PromAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// Alerts returns the pending and firing alerts.
func (p *Prometheus) Alerts(t *testing.T) []PromAlert {
	t.Helper()
	var data struct {
		Alerts []PromAlert `json:"alerts"`
	}
	p.API(t, "/api/v1/alerts", &data)
	return data.Alerts
}

// TargetHealth returns the health and last scrape error of job's target.
func (p *Prometheus) TargetHealth(t *testing.T, job string) (health, lastError string) {
	t.Helper()
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	p.API(t, "/api/v1/targets?state=active", &data)
	for _, tg := range data.ActiveTargets {
		if tg.Labels["job"] == job {
			return tg.Health, tg.LastError
		}
	}
	return "absent", ""
}

// Query runs an instant query and returns its result vector.
func (p *Prometheus) Query(t *testing.T, expr string) []json.RawMessage {
	t.Helper()
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	p.API(t, "/api/v1/query?query="+url.QueryEscape(expr), &data)
	return data.Result
}

// RuleHealth is one rule's state as /api/v1/rules reports it.
type RuleHealth struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// Rules returns every loaded rule.
func (p *Prometheus) Rules(t *testing.T) []RuleHealth {
	t.Helper()
	var data struct {
		Groups []struct {
			Rules []RuleHealth `json:"rules"`
		} `json:"groups"`
	}
	p.API(t, "/api/v1/rules", &data)
	var out []RuleHealth
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// Alertmanager is a running Alertmanager (Debian package
// prometheus-alertmanager, 0.25), alone (no cluster).
type Alertmanager struct {
	*Proc
	URL string
}

// StartAlertmanager runs Alertmanager with the configuration config (YAML)
// on a free port and waits until it is ready.
func StartAlertmanager(t *testing.T, config string) *Alertmanager {
	t.Helper()
	return StartAlertmanagerOn(t, FreeAddr(t), config)
}

// StartAlertmanagerOn is StartAlertmanager listening on listen.
func StartAlertmanagerOn(t *testing.T, listen, config string) *Alertmanager {
	t.Helper()
	p, url := startDaemon(t, "prometheus-alertmanager", listen, config, func(cfg, data, listen string) []string {
		return []string{"--config.file=" + cfg, "--storage.path=" + data, "--web.listen-address=" + listen,
			"--cluster.listen-address=", "--log.level=warn"}
	})
	return &Alertmanager{Proc: p, URL: url}
}

// AMAlert is an alert as Alertmanager's /api/v2/alerts lists it.
type AMAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// Alerts returns the alerts Alertmanager holds (active, silenced,
// inhibited; not the resolved ones).
func (a *Alertmanager) Alerts(t *testing.T) []AMAlert {
	t.Helper()
	resp, err := http.Get(a.URL + "/api/v2/alerts")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out []AMAlert
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// StartPrometheusWithShippedRules runs Prometheus scraping target (job
// authpipe) every second with the shipped rule files
// (alerts/prometheus/*.yml, as ShippedRulesForTest writes them), and
// returns it with the number of rules.
func StartPrometheusWithShippedRules(t *testing.T, target string) (*Prometheus, int) {
	t.Helper()
	rulesDir := t.TempDir()
	rules := ShippedRulesForTest(t, rulesDir)
	p := StartPrometheus(t, fmt.Sprintf(`global:
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

// ShippedRulesForTest copies the shipped Prometheus rule files into dir,
// with the `for:` of AuthpipeAuditWriteFailing (shipped: 3m) set to 0s so
// the tests do not wait minutes. Every other rule is as shipped. It
// returns the number of rules.
func ShippedRulesForTest(t *testing.T, dir string) (rules int) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(RepoRoot(t), "alerts/prometheus/*.yml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	patched := map[string]bool{"AuthpipeAuditWriteFailing": false}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var doc yaml.Node
		require.NoError(t, yaml.Unmarshal(b, &doc))
		rules += len(LoadRuleFile(t, f))
		WalkMappings(&doc, func(m *yaml.Node) {
			a := MapValue(m, "alert")
			if a == nil {
				return
			}
			if _, ok := patched[a.Value]; !ok {
				return
			}
			v := MapValue(m, "for")
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

// WalkMappings calls fn on every mapping node under n, n included.
func WalkMappings(n *yaml.Node, fn func(*yaml.Node)) {
	if n.Kind == yaml.MappingNode {
		fn(n)
	}
	for _, c := range n.Content {
		WalkMappings(c, fn)
	}
}

// MapValue is the value of key in the mapping node m; nil when m is nil,
// not a mapping, or has no key.
func MapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// PromRule is the part of a Prometheus alerting rule the tests read.
type PromRule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

// LoadRuleFile reads the rules of a Prometheus rule file.
func LoadRuleFile(t *testing.T, path string) []PromRule {
	t.Helper()
	var file struct {
		Groups []struct {
			Rules []PromRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(b, &file), path)
	var out []PromRule
	for _, g := range file.Groups {
		out = append(out, g.Rules...)
	}
	return out
}
