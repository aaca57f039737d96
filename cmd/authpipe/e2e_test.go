package main

// End-to-end tests: the authpipe binary as a subprocess against the Auth0 and
// Segment simulators (served over real HTTP from this test process) and a
// real redis-server. Faults are injected where they happen in production:
// the worker is killed, Redis is killed, Segment and Auth0 misbehave.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

var authpipeBin string

func TestMain(m *testing.M) {
	// The version and revision are injected as the Dockerfile does.
	os.Exit(e2etest.Main(m, "-X main.version="+e2eVersion+" -X main.revision="+e2eRevision, &authpipeBin))
}

const (
	e2eClientID     = e2etest.ClientID
	e2eClientSecret = e2etest.ClientSecret
	e2eWriteKey     = e2etest.WriteKey
)

// harness is one tenant's world: the simulators, a Redis, the env of authpipe.
type harness struct {
	t         *testing.T
	auth0     *sim.Auth0
	segment   *sim.Segment
	auth0URL  string
	segURL    string
	redisAddr string
	tenant    string
	listen    string
	extraEnv  []string
	dir       string // working directory of authpipe run; default the repository root

	mu   sync.Mutex
	logs bytes.Buffer // every process's stderr, for failure reports and secret checks
}

func newHarness(t *testing.T, redisAddr string) *harness {
	t.Helper()
	h := &harness{
		t:         t,
		auth0:     sim.NewAuth0(sim.Auth0Options{ClientID: e2eClientID, ClientSecret: e2eClientSecret}),
		segment:   sim.NewSegment(sim.SegmentOptions{WriteKey: e2eWriteKey}),
		redisAddr: redisAddr,
		tenant:    fmt.Sprintf("e2e%d", rand.Uint32()),
		listen:    freeAddr(t),
	}
	a := httptest.NewServer(h.auth0)
	s := httptest.NewServer(h.segment)
	t.Cleanup(a.Close)
	t.Cleanup(s.Close)
	h.auth0URL, h.segURL = a.URL, s.URL
	e2etest.ReportOnFailure(t, h.listen, func() string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.logs.String()
	})
	return h
}

// Short names for the shared helpers (internal/e2etest).
func freeAddr(t *testing.T) string { return e2etest.FreeAddr(t) }
func tail(s string, n int) string  { return e2etest.Tail(s, n) }

// addEvents puts n events, dated over the last hour, into the Auth0 simulator.
func (h *harness) addEvents(n int) []string { return e2etest.AddEvents(h.auth0, n) }

func (h *harness) env() []string {
	env := e2etest.RunEnv{Auth0URL: h.auth0URL, SegmentURL: h.segURL, RedisAddr: h.redisAddr, Tenant: h.tenant, Listen: h.listen}
	return append(env.List(), h.extraEnv...)
}

// proc is one running authpipe.
type proc struct {
	*e2etest.Proc
	cmd  *exec.Cmd
	done <-chan struct{}
}

func (h *harness) start() *proc {
	h.t.Helper()
	return h.startEnv(h.env())
}

// startEnv starts authpipe run with the environment env; its output goes
// to the harness' log.
func (h *harness) startEnv(env []string) *proc {
	h.t.Helper()
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir = cmp.Or(h.dir, "../..")
	cmd.Env = env
	p := e2etest.Start(h.t, cmd, harnessLog{h})
	return &proc{Proc: p, cmd: cmd, done: p.Done()}
}

// harnessLog writes to the harness' log under its lock.
type harnessLog struct{ h *harness }

func (l harnessLog) Write(b []byte) (int, error) {
	l.h.mu.Lock()
	defer l.h.mu.Unlock()
	return l.h.logs.Write(b)
}

func (p *proc) kill() { p.Kill() }

// waitReady waits until /-/ready answers 200.
func (h *harness) waitReady(p *proc, timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			h.t.Fatalf("authpipe exited before it was ready: %v", p.Err())
		default:
		}
		resp, err := http.Get("http://" + h.listen + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("authpipe not ready within %s", timeout)
}

// delivered counts the expected log_ids Segment has received at least once.
func (h *harness) delivered(ids []string) int { return e2etest.Delivered(h.segment, h.tenant, ids) }

func (h *harness) waitDelivered(ids []string, timeout time.Duration) {
	h.t.Helper()
	e2etest.WaitDelivered(h.t, h.segment, h.tenant, ids, timeout)
}

// requireExactlyOnceByMessageID checks that Segment saw every expected event
// under its deterministic messageId and nothing else (see
// e2etest.RequireExactlyOnceByMessageID).
func (h *harness) requireExactlyOnceByMessageID(ids []string) (duplicates int) {
	h.t.Helper()
	return e2etest.RequireExactlyOnceByMessageID(h.t, h.segment, h.tenant, ids)
}

func (h *harness) requireNoSecretsLogged() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	e2etest.RequireNoSecrets(h.t, h.logs.String())
}

// requireComponents checks that every line authpipe wrote is a JSON log
// entry naming its component, and that each of want wrote some: a package
// whose logger lost its component key shows as main's ("authpipe").
func (h *harness) requireComponents(want ...string) {
	h.t.Helper()
	h.mu.Lock()
	logs := h.logs.String()
	h.mu.Unlock()
	got := testlogs.Components(logs)
	require.NotContains(h.t, got, "", "a line without a component:\n%s", logs)
	require.Subset(h.t, got, want)
}

func (h *harness) metric(name string) float64 {
	h.t.Helper()
	return e2etest.MetricSum(h.t, h.listen, name)
}

func TestE2EDeliversEveryEventOnce(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	ids := h.addEvents(20000)
	p := h.start()
	h.waitReady(p, 20*time.Second)
	h.waitDelivered(ids, 90*time.Second)
	dups := h.requireExactlyOnceByMessageID(ids)
	require.Zero(t, dups, "no fault, no redelivery")
	require.Eventually(t, func() bool { return h.metric("authpipe_buffer_backlog_events") == 0 }, 20*time.Second, 100*time.Millisecond)
	require.Equal(t, float64(len(ids)), h.metric("authpipe_auth0_events_polled_total"))
	require.GreaterOrEqual(t, h.metric("authpipe_forward_events_acked_total"), float64(len(ids)))
	require.Zero(t, h.metric("authpipe_dead_letter_events"))
	h.requireNoSecretsLogged()
	h.requireComponents("authpipe", "auth0poll", "forward", "lease")

	// The first start's backfill ends with its counts, and polling at the
	// head says so once.
	h.mu.Lock()
	logs := h.logs.String()
	h.mu.Unlock()
	require.Equal(t, 1, strings.Count(logs, `"msg":"auth0 backfill done"`))
	require.Contains(t, logs, `"fetched":20000,"added":20000,"duplicates":0`)
	require.Equal(t, 1, strings.Count(logs, `"msg":"auth0 poller caught up"`))

	// Go's profiles are not served unless AUTHPIPE_PPROF asks for them.
	resp, err := http.Get("http://" + h.listen + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NotContains(t, string(body), "goroutine profile:")
	require.NotEqual(t, http.StatusOK, resp.StatusCode)
}

func TestE2ESurvivesSIGKILL(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	// Slow both ends down so the kills land mid-poll and mid-forward.
	h.auth0.SetRateLimit(5, 600)
	h.segment.SetDelay(30 * time.Millisecond)
	ids := h.addEvents(8000)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range 5 {
		p := h.start()
		time.Sleep(time.Duration(400+rng.IntN(1200)) * time.Millisecond)
		p.kill()
		t.Logf("kill %d: %d of %d delivered", i+1, h.delivered(ids), len(ids))
	}
	p := h.start()
	h.waitDelivered(ids, 120*time.Second)
	dups := h.requireExactlyOnceByMessageID(ids)
	t.Logf("redelivered duplicates (absorbed by messageId): %d", dups)
	p.kill()
}

func TestE2ESurvivesRedisRestart(t *testing.T) {
	srv := testredis.Start(t)
	h := newHarness(t, srv.Addr)
	h.auth0.SetRateLimit(5, 900)
	h.segment.SetDelay(20 * time.Millisecond)
	ids := h.addEvents(6000)
	p := h.start()
	h.waitReady(p, 20*time.Second)
	require.Eventually(t, func() bool { return h.delivered(ids) > 500 }, 60*time.Second, 50*time.Millisecond)
	srv.Kill()
	time.Sleep(4 * time.Second)
	require.NoError(t, srv.Restart())
	h.waitDelivered(ids, 120*time.Second)
	h.requireExactlyOnceByMessageID(ids)
	select {
	case <-p.done:
		t.Fatalf("authpipe exited while Redis was down: %v", p.Err())
	default:
	}

	// The outage is in the log once, not once per retry, and so is its end.
	h.mu.Lock()
	logs := h.logs.String()
	h.mu.Unlock()
	count := func(msg string) int { return strings.Count(logs, `"msg":"`+msg+`"`) }
	require.Equal(t, 1, count("read buffer"), "the forwarder's failed reads, retried every second, are logged once")
	require.Equal(t, 1, count("read buffer: recovered"))
	require.Equal(t, 1, count("buffer unreachable; /-/ready answers 503"))
	require.Equal(t, 1, count("buffer reachable again"))
}

func TestE2ESegmentOutageAndRejectedEvent(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	ids := h.addEvents(3000)
	poison := ids[1234]
	h.segment.RejectMessageID(h.tenant + "-" + poison)
	h.segment.SetStatus(http.StatusServiceUnavailable)
	p := h.start()
	h.waitReady(p, 20*time.Second)
	require.Eventually(t, func() bool { return h.segment.Stats().Status[503] >= 5 }, 30*time.Second, 50*time.Millisecond)
	require.Zero(t, h.delivered(ids))
	h.segment.SetStatus(0)
	h.segment.RateLimitNext(3, 2*time.Second)
	rest := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == poison })
	h.waitDelivered(rest, 120*time.Second)
	require.Zero(t, h.delivered([]string{poison}))
	require.GreaterOrEqual(t, h.segment.Stats().Status[429], 1)
	require.Eventually(t, func() bool { return h.metric("authpipe_dead_letter_events") == 1 }, 60*time.Second, 100*time.Millisecond)

	out := h.dlqEntries()
	require.Len(t, out, 1)
	require.Equal(t, poison, out[0]["id"])
	require.Contains(t, out[0]["reason"], "400")
	h.requireNoSecretsLogged()
}

// neighbour polls the Auth0 simulator's logs endpoint every interval with its
// own token until done reports true or the span has passed.
func (h *harness) neighbour(every, span time.Duration, done func() bool) {
	h.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {e2eClientID},
		"client_secret": {e2eClientSecret}, "audience": {h.auth0URL + "/api/v2/"}}
	resp, err := http.PostForm(h.auth0URL+"/oauth/token", form)
	require.NoError(h.t, err)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(h.t, json.NewDecoder(resp.Body).Decode(&tok))
	resp.Body.Close()
	require.NotEmpty(h.t, tok.AccessToken)

	tick := time.NewTicker(every)
	defer tick.Stop()
	for end := time.Now().Add(span); time.Now().Before(end) && !done(); <-tick.C {
		req, _ := http.NewRequest(http.MethodGet, h.auth0URL+"/api/v2/logs?take=1&from="+strings.Repeat("9", 56), nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

// dlqEntries reads the tenant's dead-letter stream directly from Redis.
func (h *harness) dlqEntries() []map[string]string {
	h.t.Helper()
	c := testredis.Client(h.t)
	msgs, err := c.XRange(context.Background(), "authpipe:{"+h.tenant+"}:dlq", "-", "+").Result()
	require.NoError(h.t, err)
	var out []map[string]string
	for _, m := range msgs {
		e := map[string]string{}
		for k, v := range m.Values {
			e[k] = fmt.Sprint(v)
		}
		out = append(out, e)
	}
	return out
}

func TestE2EAuth0Faults(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	h.auth0.SetRateLimit(3, 1200)
	h.auth0.FailEveryN(7, http.StatusInternalServerError)
	ids := h.addEvents(5000)
	p := h.start()
	// Another Management API client of the tenant drains the shared bucket
	// for a while, as on a real tenant, so authpipe meets 429s it could not
	// foresee. It drains until authpipe met one: how soon depends on where
	// authpipe's retries fall, which a loaded machine moves (a fixed 3 s
	// failed CI once).
	h.waitReady(p, 20*time.Second)
	met429 := func() bool { return h.metric(`authpipe_auth0_requests_total{code="429"`) >= 1 }
	h.neighbour(10*time.Millisecond, 60*time.Second, met429)
	require.Eventually(t, func() bool { return h.delivered(ids) > 1000 }, 60*time.Second, 50*time.Millisecond)
	h.auth0.MalformedNext(1)
	h.waitDelivered(ids, 120*time.Second)
	require.Zero(t, h.requireExactlyOnceByMessageID(ids))
	require.GreaterOrEqual(t, h.metric(`authpipe_auth0_requests_total{code="429"`), 1.0, "authpipe met the rate limit")
	require.GreaterOrEqual(t, h.metric(`authpipe_auth0_requests_total{code="5xx"`), 1.0, "authpipe met the injected failures")
	require.GreaterOrEqual(t, h.metric("authpipe_auth0_page_errors_total"), 1.0, "the malformed page was reported")
	p.kill()
}

func TestE2ESIGTERMDrainsAndRestartDeliversTheRest(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	h.auth0.SetRateLimit(5, 600)
	h.segment.SetDelay(50 * time.Millisecond)
	ids := h.addEvents(6000)
	p := h.start()
	require.Eventually(t, func() bool { return h.delivered(ids) > 300 }, 60*time.Second, 50*time.Millisecond)
	require.Less(t, h.delivered(ids), len(ids), "SIGTERM must land mid-run")
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("authpipe did not exit within 10 s of SIGTERM")
	}
	t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	require.NoError(t, p.Err(), "clean exit status")
	h.start()
	h.waitDelivered(ids, 120*time.Second)
	h.requireExactlyOnceByMessageID(ids)
}

func TestE2EBadConfigExitsWithOneLine(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
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
			env := slices.DeleteFunc(h.env(), func(kv string) bool {
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
			require.NotContains(t, out, e2eClientSecret)
			require.NotContains(t, out, e2eWriteKey)
		})
	}
}

func TestE2EThresholdAlertReachesAlertmanager(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	var mu sync.Mutex
	var got []map[string]any
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/alerts" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var alerts []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&alerts); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, alerts...)
		mu.Unlock()
	}))
	t.Cleanup(am.Close)
	h.extraEnv = append(h.extraEnv, "ALERTMANAGER_URL="+am.URL)

	h.addEvents(200)
	p := h.start()
	h.waitReady(p, 20*time.Second)

	var burst []sim.Event
	now := time.Now().UTC()
	for i := range 40 {
		burst = append(burst, sim.Event{Type: "fp", IP: "203.0.113.7", UserName: fmt.Sprintf("victim%d@example.com", i%3),
			UserID: "auth0|victim", Date: now.Add(time.Duration(i) * 100 * time.Millisecond)})
	}
	h.auth0.Add(burst...)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range got {
			labels, _ := a["labels"].(map[string]any)
			if labels["alertname"] == "FailedLoginsPerIP" && labels["ip"] == "203.0.113.7" {
				return true
			}
		}
		return false
	}, 20*time.Second, 100*time.Millisecond, "the brute-force alert reaches Alertmanager")
	require.Eventually(t, func() bool {
		return h.metric(`authpipe_threshold_breached{rule="FailedLoginsPerIP"`) == 1
	}, 40*time.Second, 200*time.Millisecond)

	// The IP is in the alert, never in a metric label.
	resp, err := http.Get("http://" + h.listen + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NotContains(t, string(body), "203.0.113.7")
	require.NotContains(t, string(body), "victim")
}

func TestE2EStatusPage(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	ids := h.addEvents(500)
	p := h.startEnv(append(h.env(), "AUTHPIPE_PPROF=true"))
	h.waitReady(p, 20*time.Second)
	h.waitDelivered(ids, 60*time.Second)

	// AUTHPIPE_PPROF mounts Go's profiles (off by default: see
	// TestE2EDeliversEveryEventOnce).
	resp, err := http.Get("http://" + h.listen + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "goroutine profile:")

	resp, err = http.Get("http://" + h.listen + "/")
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	page := string(body)
	require.Contains(t, page, h.tenant)
	for _, stage := range []string{"poll", "buffer", "forward"} {
		require.Contains(t, page, stage)
	}
	require.Contains(t, page, "FailedLoginsPerIP", "rules and their state are shown")
	require.Contains(t, page, "500", "the stage counters are shown")
}
