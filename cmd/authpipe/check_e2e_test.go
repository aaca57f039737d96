package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// checkWriteKey has the form of a Segment write key (32 letters and
// digits), so that the write-key check passes without a warning.
const checkWriteKey = "Chk0WriteKey0DoNotLog0abcdefghij"

// runCheck runs `authpipe check` with env in dir and returns its exit
// status and output.
func runCheck(t *testing.T, dir string, env []string) (int, string) {
	t.Helper()
	cmd := exec.Command(authpipeBin, "check", "--timeout", "5s")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return code, string(out)
}

// checkLines maps each check's name to its state, from check's output.
func checkLines(t *testing.T, out string) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`^(ok|WARN|FAIL|skip)\s+(.+?)\s{2,}`)
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			got[strings.TrimSpace(m[2])] = m[1]
		}
	}
	return got
}

// startAlertmanagerForCheck runs the Debian package's Alertmanager on a
// free port with a minimal configuration and returns its URL.
func startAlertmanagerForCheck(t *testing.T) string {
	t.Helper()
	bin := needTool(t, "prometheus-alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	require.NoError(t, os.WriteFile(cfg, []byte("route:\n  receiver: none\nreceivers:\n  - name: none\n"), 0o644))
	listen := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+listen, "--cluster.listen-address=", "--log.level=warn")
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	url := "http://" + listen
	require.Eventually(t, func() bool {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "alertmanager not ready: %s", out)
	return url
}

// TestE2ECheck: authpipe check passes against the simulators, a real
// redis-server and a real Alertmanager, and names the one failing check,
// with exit status 1, for each broken part of the configuration.
func TestE2ECheck(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	// A Segment simulator that takes a key of the real form.
	h.segment = sim.NewSegment(sim.SegmentOptions{WriteKey: checkWriteKey})
	seg := httptest.NewServer(h.segment)
	t.Cleanup(seg.Close)
	h.segURL = seg.URL
	amURL := startAlertmanagerForCheck(t)
	unsafe := testredis.StartWith(t, "--appendonly", "no", "--save", "")
	env := func(extra ...string) []string {
		e := append(h.env(), "SEGMENT_WRITE_KEY="+checkWriteKey, "ALERTMANAGER_URL="+amURL)
		return append(e, extra...)
	}
	all := []string{"config", "rules", "auth0 token", "auth0 read:logs", "segment write key", "segment endpoint",
		"redis", "redis persistence", "redis eviction", "alertmanager"}

	for _, tc := range []struct {
		name    string
		env     []string
		setup   func(t *testing.T)
		failing string // "" when every check passes
	}{
		{name: "passes", env: env()},
		{name: "wrong client secret", env: env("AUTH0_CLIENT_SECRET=wrong-secret"), failing: "auth0 token"},
		{name: "no read:logs scope", env: env(), failing: "auth0 read:logs", setup: func(t *testing.T) {
			h.auth0.SetScopes("read:users")
			t.Cleanup(func() { h.auth0.SetScopes("read:logs", "read:logs_users") })
		}},
		{name: "redis without persistence", env: env("REDIS_URL=redis://" + unsafe.Addr + "/0"), failing: "redis persistence"},
		{name: "unreachable alertmanager", env: env("ALERTMANAGER_URL=http://" + freeAddr(t)), failing: "alertmanager"},
		{name: "segment refuses the key", env: env("SEGMENT_WRITE_KEY=Chk0WriteKey0DoNotLog0ZZZZZZZZZZ"), failing: "segment endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			code, out := runCheck(t, "../..", tc.env)
			t.Log(out)
			got := checkLines(t, out)
			for _, name := range all {
				want := checkOK
				if name == tc.failing {
					want = checkFail
				}
				if tc.failing == "auth0 token" && name == "auth0 read:logs" {
					want = checkSkip // no token to try it with
				}
				require.Equal(t, want, got[name], "check %q", name)
			}
			if tc.failing == "" {
				require.Equal(t, 0, code)
				require.Contains(t, out, "SUCCESS: 10 checks passed, 0 warnings")
			} else {
				require.Equal(t, 1, code)
				require.Contains(t, out, "FAILED: 1 of ")
			}
			for _, secret := range []string{e2eClientSecret, checkWriteKey, "wrong-secret", "Chk0WriteKey0DoNotLog0ZZZZZZZZZZ"} {
				require.NotContains(t, out, secret)
			}
		})
	}
}

// TestE2ECheckBadConfig: a configuration that does not load is a failed
// check, not a usage error.
func TestE2ECheckBadConfig(t *testing.T) {
	code, out := runCheck(t, t.TempDir(), []string{"PATH=" + os.Getenv("PATH"), "AUTH0_POLL_INTERVAL=soon"})
	require.Equal(t, 1, code, out)
	require.Regexp(t, `(?m)^FAIL  config\s+config: .*AUTH0_POLL_INTERVAL`, out)
}
