package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// demoCmd runs `authpipe demo` with no Redis and no network but loopback.
func demoCmd(t *testing.T, dir string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(authpipeBin, append([]string{"demo", "--data-dir", dir, "--listen", freeAddr(t)}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()} // no REDIS_URL: the embedded buffer
	cmd.Dir = t.TempDir()                                           // not the repo: rules come embedded
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

func TestDemoForwardsEverythingAndFiresAlerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	cmd, out := demoCmd(t, dir, "--duration", "20s")
	err := cmd.Run()
	require.NoError(t, err, "demo output:\n%s", out)
	s := out.String()
	require.Contains(t, s, "nothing lost: every generated event reached Segment")
	for _, alert := range []string{"FailedLoginsPerIP", "CredentialStuffing"} {
		require.Regexp(t, `alerts fired\s+.*`+alert, s)
	}
	require.NotContains(t, s, "MISSING ALERT")
	require.GreaterOrEqual(t, strings.Count(s, "polled"), 15, "a live line a second")
}

func TestDemoKilledAndRestartedLosesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	first, out := demoCmd(t, dir, "--duration", "1m", "--rate", "200")
	require.NoError(t, first.Start())
	time.Sleep(6 * time.Second)
	require.NoError(t, first.Process.Signal(syscall.SIGKILL))
	_ = first.Wait()
	require.NotContains(t, out.String(), "summary", "killed before it could finish")

	second, out2 := demoCmd(t, dir, "--duration", "5s")
	require.NoError(t, second.Run(), "restarted demo output:\n%s", out2)
	require.Contains(t, out2.String(), "nothing lost: every generated event reached Segment")
}
