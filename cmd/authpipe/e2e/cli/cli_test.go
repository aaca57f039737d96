// Package cli tests authpipe's commands as an operator runs them, from
// the binary: --help everywhere, bad configurations, `authpipe check`
// against the simulators and a real Alertmanager, `authpipe rules`,
// `authpipe run` from an empty directory, `authpipe sim`, and `authpipe
// demo`, killed and restarted, losing nothing.
package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/alerts"
	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

const repoRoot = "../../../.."

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

func TestE2EBadConfigExitsWithOneLine(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	cases := map[string]struct {
		drop, set string
		want      string
	}{
		"missing secret":    {drop: "AUTH0_CLIENT_SECRET", want: "AUTH0_CLIENT_SECRET"},
		"missing write key": {drop: "SEGMENT_WRITE_KEY", want: "SEGMENT_WRITE_KEY"},
		"bad interval":      {set: "AUTH0_POLL_INTERVAL=often", want: "AUTH0_POLL_INTERVAL"},
		"bad retention":     {set: "AUTH0_LOG_RETENTION=-5h", want: "AUTH0_LOG_RETENTION"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := slices.DeleteFunc(h.Env(), func(kv string) bool {
				return tc.drop != "" && strings.HasPrefix(kv, tc.drop+"=")
			})
			if tc.set != "" {
				env = append(env, tc.set)
			}
			cmd := exec.Command(authpipeBin, "run")
			cmd.Env = env
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			require.NotZero(t, exit.ExitCode())
			out := strings.TrimRight(stderr.String(), "\n")
			require.NotContains(t, out, "\n", "one line")
			require.Contains(t, out, tc.want)
			require.NotContains(t, out, e2etest.ClientSecret)
			require.NotContains(t, out, e2etest.WriteKey)
		})
	}
}

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
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	h.Dir = t.TempDir()
	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	shipped, err := rules.LoadData("shipped", alerts.Thresholds)
	require.NoError(t, err)
	require.Equal(t, 1.0, h.Metric("authpipe_rules_last_reload_successful"))
	for _, name := range shipped.Names() {
		require.Equal(t, 0.0, h.Metric(`authpipe_threshold_breached{rule="`+name+`"`), "rule %s loaded", name)
	}
	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	<-p.Done()
	logs := h.Logs()
	require.Contains(t, logs, `"msg":"threshold rules: AUTHPIPE_RULES is unset and alerts/thresholds.yml is absent; using the shipped rules built into the binary"`)
	require.Contains(t, logs, `"rules":"built-in:alerts/thresholds.yml"`)
	entries, err := os.ReadDir(h.Dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing written to the working directory (Redis buffer)")

	// Set and missing: an error naming the setting, not a silent fallback.
	missing := filepath.Join(h.Dir, "alerts", "thresholds.yml")
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir, cmd.Env = h.Dir, append(h.Env(), "AUTHPIPE_RULES="+missing)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Contains(t, string(out), "AUTHPIPE_RULES")
	require.Contains(t, string(out), missing)
	require.NotContains(t, string(out), "built-in")
}

// The states authpipe check prints.
const (
	checkOK   = "ok"
	checkFail = "FAIL"
	checkSkip = "skip"
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

// TestE2ECheck: authpipe check passes against the simulators, a real
// redis-server and a real Alertmanager, and names the one failing check,
// with exit status 1, for each broken part of the configuration.
func TestE2ECheck(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	// A Segment simulator that takes a key of the real form.
	h.Segment = sim.NewSegment(sim.SegmentOptions{WriteKey: checkWriteKey})
	seg := httptest.NewServer(h.Segment)
	t.Cleanup(seg.Close)
	h.SegmentURL = seg.URL
	amURL := e2etest.StartAlertmanager(t, "route:\n  receiver: none\nreceivers:\n  - name: none\n").URL
	unsafe := testredis.StartWith(t, "--appendonly", "no", "--save", "")
	env := func(extra ...string) []string {
		e := append(h.Env(), "SEGMENT_WRITE_KEY="+checkWriteKey, "ALERTMANAGER_URL="+amURL)
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
			h.Auth0.SetScopes("read:users")
			t.Cleanup(func() { h.Auth0.SetScopes("read:logs", "read:logs_users") })
		}},
		{name: "redis without persistence", env: env("REDIS_URL=redis://" + unsafe.Addr + "/0"), failing: "redis persistence"},
		{name: "unreachable alertmanager", env: env("ALERTMANAGER_URL=http://" + e2etest.FreeAddr(t)), failing: "alertmanager"},
		{name: "segment refuses the key", env: env("SEGMENT_WRITE_KEY=Chk0WriteKey0DoNotLog0ZZZZZZZZZZ"), failing: "segment endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			code, out := runCheck(t, repoRoot, tc.env)
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
			for _, secret := range []string{e2etest.ClientSecret, checkWriteKey, "wrong-secret", "Chk0WriteKey0DoNotLog0ZZZZZZZZZZ"} {
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

func runAuthpipe(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(authpipeBin, args...)
	cmd.Dir = repoRoot
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

	tests, err := filepath.Glob(repoRoot + "/alerts/tests/*.test.yml")
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

func TestSimCommandServesTrafficAndStopsOnSIGTERM(t *testing.T) {
	s := e2etest.StartSim(t, authpipeBin, "--rate", "50", "--seed", "7")
	for _, u := range []string{s.Auth0URL, s.SegmentURL} {
		resp, err := http.Get(u + "/-/healthy")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, u)
	}
	began := time.Now()
	// The scripted brute force (30 failed logins from one IP) comes at +3s..+6s.
	require.Eventually(t, func() bool { return s.Generated(t) >= 30+50*6 }, 20*time.Second, 100*time.Millisecond)

	// It is a faithful Auth0: wrong credentials are refused, right ones get
	// a token that reads the generated logs in checkpoint mode.
	token := func(secret string) (int, string) {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {e2etest.ClientID},
			"client_secret": {secret}, "audience": {s.Auth0URL + "/api/v2/"}}
		resp, err := http.PostForm(s.Auth0URL+"/oauth/token", form)
		require.NoError(t, err)
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&tok)
		return resp.StatusCode, tok.AccessToken
	}
	code, _ := token("wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	code, tok := token(e2etest.ClientSecret)
	require.Equal(t, http.StatusOK, code)

	from := auth0log.CheckpointAt(began.Add(-time.Minute))
	bruteForce := 0
	for range 20 {
		req, _ := http.NewRequest(http.MethodGet, s.Auth0URL+"/api/v2/logs?take=100&from="+from, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var page []struct {
			LogID string `json:"log_id"`
			Type  string `json:"type"`
			IP    string `json:"ip"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		for _, l := range page {
			if l.Type == "fp" && l.IP == "192.0.2.10" { // attacks[0] of cycle 0
				bruteForce++
			}
			from = l.LogID
		}
		if len(page) < 100 {
			break
		}
	}
	require.Equal(t, 30, bruteForce, "the scripted brute force is in the Auth0 logs")

	require.NoError(t, s.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("authpipe sim did not stop within 5 s of SIGTERM")
	}
	require.NoError(t, s.Err())
	out := s.Out.String()
	require.Contains(t, out, "authpipe sim stopped: generated")
	require.NotContains(t, out, e2etest.ClientSecret)
	require.NotContains(t, out, e2etest.WriteKey)
}

func TestSimCommandNeedsCredentials(t *testing.T) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(authpipeBin, "sim", "--auth0-listen", "127.0.0.1:0", "--segment-listen", "127.0.0.1:0")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, 2, exit.ExitCode())
	require.Contains(t, stderr.String(), "AUTH0_CLIENT_SECRET")
}

// demoCmd runs `authpipe demo` with no Redis and no network but loopback.
func demoCmd(t *testing.T, dir string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(authpipeBin, append([]string{"demo", "--data-dir", dir, "--listen", e2etest.FreeAddr(t)}, args...)...)
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
