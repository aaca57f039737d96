package thresholds

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/internal/thtest"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Every shipped rule passes its rules test, and every shipped rule has one.
func TestShippedRules(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, rules.CheckFiles([]string{"../../alerts/thresholds.yml"}, &out), out.String())
	rs, err := rules.Load("../../alerts/thresholds.yml")
	require.NoError(t, err)

	files, err := filepath.Glob("../../alerts/tests/*.test.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out.Reset()
	err = TestFiles(files, &out)
	t.Log(out.String())
	require.NoError(t, err)

	// Each rule has a case where it fires and one where it must not.
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		for _, tc := range readTestFile(t, f).Tests {
			for _, a := range tc.Alerts {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					quiet[a.Alertname] = true
				}
			}
		}
	}
	for _, r := range rs.Rules {
		require.True(t, fires[r.Name], "rule %s has no rules test where it fires", r.Name)
		require.True(t, quiet[r.Name], "rule %s has no rules test where it must not fire", r.Name)
		require.NotEmpty(t, r.Annotations["summary"], r.Name)
		require.NotEmpty(t, r.Annotations["description"], r.Name)
		require.NotEmpty(t, r.Annotations["runbook_url"], r.Name)
	}
}

// TestEngineRulesData: an engine given the rules' content (the shipped
// rules embedded in the binary) loads them without reading RulesPath, which
// only names them in errors; Reload parses the same content again, and a
// bad content is reported under that name.
func TestEngineRulesData(t *testing.T) {
	data, err := os.ReadFile("../../alerts/thresholds.yml")
	require.NoError(t, err)
	b := thtest.RedisBuffer(t, testredis.Client(t), testredis.Name(t), nil)
	const name = "built-in:alerts/thresholds.yml" // no such file
	e, err := New(Config{Tenant: "t", RulesPath: name, Rules: data, Buffer: b}, Deps{})
	require.NoError(t, err)
	want, err := rules.LoadData(name, data)
	require.NoError(t, err)
	require.Equal(t, want.Names(), e.Rules().Names())
	require.NotEmpty(t, e.Rules().Names())
	require.NoError(t, e.Reload())
	require.Equal(t, want.Names(), e.Rules().Names())

	_, err = New(Config{Tenant: "t", RulesPath: name, Rules: []byte("rules: [{name: x}]\n"), Buffer: b}, Deps{})
	require.ErrorContains(t, err, name+":1:")
}
