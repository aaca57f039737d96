package thresholds

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every shipped rule passes its rules test, and every shipped rule has one.
func TestShippedRules(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, CheckFiles([]string{"../../alerts/thresholds.yml"}, &out), out.String())
	rs, err := LoadRules("../../alerts/thresholds.yml")
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
