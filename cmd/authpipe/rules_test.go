package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func runAuthpipe(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(authpipeBin, args...)
	cmd.Dir = "../.."
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), out.String()
	}
	require.NoError(t, err)
	return 0, out.String()
}

func TestRulesCommands(t *testing.T) {
	code, out := runAuthpipe(t, "rules", "check", "alerts/thresholds.yml")
	require.Equal(t, 0, code, out)

	tests, err := filepath.Glob("../../alerts/tests/*.test.yml")
	require.NoError(t, err)
	require.NotEmpty(t, tests)
	args := []string{"rules", "test"}
	for _, f := range tests {
		args = append(args, filepath.Join("alerts/tests", filepath.Base(f)))
	}
	code, out = runAuthpipe(t, args...)
	require.Equal(t, 0, code, out)

	bad := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte("rules:\n  - name: X\n    types: [fp]\n    window: 5 minutes\n    threshold: 3\n"), 0o600))
	code, out = runAuthpipe(t, "rules", "check", bad)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, bad+":4:", "file:line of the bad field")
	require.Contains(t, out, "window")

	code, _ = runAuthpipe(t, "rules")
	require.Equal(t, 2, code, "usage error")
}
