package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/alerts"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// TestE2EHelp: --help and -h on every command and subcommand exit 0 with
// the command's usage on stdout, from an empty directory with no
// configuration at all (help needs none).
func TestE2EHelp(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string // in the usage; "" for a usage error (exit 2)
	}{
		{[]string{"--help"}, "authpipe run "},
		{[]string{"-h"}, "authpipe check "},
		{[]string{"help"}, "authpipe dlq CMD"},
		{[]string{"run", "--help"}, "Usage: authpipe run"},
		{[]string{"run", "-h"}, "Usage: authpipe run"},
		{[]string{"help", "run"}, "Usage: authpipe run"},
		{[]string{"check", "--help"}, "Usage: authpipe check"},
		{[]string{"check", "-h"}, "redis persistence"},
		{[]string{"demo", "--help"}, "-duration"},
		{[]string{"sim", "--help"}, "-auth0-listen"},
		{[]string{"healthcheck", "--help"}, "Usage: authpipe healthcheck"},
		{[]string{"backfill", "--help"}, "Usage: authpipe backfill"},
		{[]string{"backfill", "--since", "1h", "-h"}, "Usage: authpipe backfill"},
		{[]string{"dlq", "--help"}, "authpipe dlq list"},
		{[]string{"dlq", "list", "--help"}, "authpipe dlq list"},
		{[]string{"dlq", "replay", "-h"}, "authpipe dlq replay"},
		{[]string{"dlq", "drop", "--help"}, "authpipe dlq drop"},
		{[]string{"audit", "--help"}, "authpipe audit verify"},
		{[]string{"audit", "verify", "--help"}, "authpipe audit verify"},
		{[]string{"audit", "tail", "-h"}, "authpipe audit tail"},
		{[]string{"rules", "--help"}, "authpipe rules check FILE"},
		{[]string{"rules", "check", "--help"}, "authpipe rules check FILE"},
		{[]string{"rules", "test", "-h"}, "authpipe rules test FILE"},
		{[]string{"version", "--help"}, "Usage: authpipe version"},
		// A usage error is still one.
		{[]string{"run", "extra"}, ""},
		{[]string{"nonsense"}, ""},
		{[]string{"rules"}, ""},
		{[]string{"check", "extra"}, ""},
	}
	// All at once: the race-enabled binary takes about a second to start,
	// mostly idle.
	type result struct {
		stdout, stderr bytes.Buffer
		err            error
	}
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(authpipeBin, tc.args...)
			cmd.Dir, cmd.Env = dir, []string{"PATH=" + os.Getenv("PATH")}
			cmd.Stdout, cmd.Stderr = &results[i].stdout, &results[i].stderr
			results[i].err = cmd.Run()
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		r := &results[i]
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if tc.want == "" {
				var ee *exec.ExitError
				require.ErrorAs(t, r.err, &ee)
				require.Equal(t, 2, ee.ExitCode())
				return
			}
			require.NoError(t, r.err, "exit status; stderr: %s", r.stderr.String())
			require.Contains(t, r.stdout.String(), tc.want)
			require.Empty(t, r.stderr.String())
		})
	}
}

// TestE2EStartsFromAnEmptyDirectoryWithBuiltInRules: with AUTHPIPE_RULES
// unset and no alerts/thresholds.yml in the working directory, authpipe run
// starts with the shipped rules built into the binary and says so; an
// AUTHPIPE_RULES that is set and missing stays an error.
func TestE2EStartsFromAnEmptyDirectoryWithBuiltInRules(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	h.dir = t.TempDir()
	p := h.start()
	h.waitReady(p, 20*time.Second)
	shipped, err := rules.LoadData("shipped", alerts.Thresholds)
	require.NoError(t, err)
	require.Equal(t, 1.0, h.metric("authpipe_rules_last_reload_successful"))
	for _, name := range shipped.Names() {
		require.Equal(t, 0.0, h.metric(`authpipe_threshold_breached{rule="`+name+`"`), "rule %s loaded", name)
	}
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	<-p.done
	h.mu.Lock()
	logs := h.logs.String()
	h.mu.Unlock()
	require.Contains(t, logs, `"msg":"threshold rules: AUTHPIPE_RULES is unset and alerts/thresholds.yml is absent; using the shipped rules built into the binary"`)
	require.Contains(t, logs, `"rules":"built-in:alerts/thresholds.yml"`)
	entries, err := os.ReadDir(h.dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written to the working directory (Redis buffer)")

	// Set and missing: an error naming the setting, not a silent fallback.
	missing := filepath.Join(h.dir, "alerts", "thresholds.yml")
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir, cmd.Env = h.dir, append(h.env(), "AUTHPIPE_RULES="+missing)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Contains(t, string(out), "AUTHPIPE_RULES")
	require.Contains(t, string(out), missing)
	require.NotContains(t, string(out), "built-in")
}
