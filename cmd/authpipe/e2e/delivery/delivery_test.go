// Package delivery tests, end to end, that authpipe delivers: `authpipe
// run` as a subprocess polls the Auth0 simulator into a real redis-server
// and forwards every event to the Segment simulator once (over real HTTP),
// with the PII policy and type filter applied; the status page shows it;
// a threshold breach reaches Alertmanager. A package of its own so that
// `go test ./...` runs it beside the other end-to-end packages.
package delivery

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

func TestE2EDeliversEveryEventOnce(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	ids := h.AddEvents(20000)
	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	h.WaitDelivered(ids, 90*time.Second)
	dups := h.RequireExactlyOnceByMessageID(ids)
	require.Zero(t, dups, "no fault, no redelivery")
	require.Eventually(t, func() bool { return h.Metric("authpipe_buffer_backlog_events") == 0 }, 20*time.Second, 100*time.Millisecond)
	require.Equal(t, float64(len(ids)), h.Metric("authpipe_auth0_events_polled_total"))
	require.GreaterOrEqual(t, h.Metric("authpipe_forward_events_acked_total"), float64(len(ids)))
	require.Zero(t, h.Metric("authpipe_dead_letter_events"))
	h.RequireNoSecretsLogged()
	h.RequireComponents("authpipe", "auth0poll", "forward", "lease")

	// The first start's backfill ends with its counts, and polling at the
	// head says so once.
	logs := h.Logs()
	require.Equal(t, 1, strings.Count(logs, `"msg":"auth0 backfill done"`))
	require.Contains(t, logs, `"fetched":20000,"added":20000,"duplicates":0`)
	require.Equal(t, 1, strings.Count(logs, `"msg":"auth0 poller caught up"`))

	// Go's profiles are not served unless AUTHPIPE_PPROF asks for them.
	resp, err := http.Get("http://" + h.Listen + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NotContains(t, string(body), "goroutine profile:")
	require.NotEqual(t, http.StatusOK, resp.StatusCode)
}

// TestE2EPIIHashedAndTypesFiltered runs the binary with the default PII
// policy and an exclude filter: excluded types are acknowledged unsent and
// counted, everything else arrives, and no e-mail or IP address of the
// simulator reaches Segment in clear.
func TestE2EPIIHashedAndTypesFiltered(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	h.ExtraEnv = append(h.ExtraEnv, "AUTHPIPE_FORWARD_EXCLUDE_TYPES=fsa,slo")
	ids := h.AddEvents(400)
	var sent []string
	excluded := 0
	inClear := map[string]bool{}
	emailRE := regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`)
	ipv4RE := regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b`)
	for _, id := range ids {
		raw, ok := h.Auth0.Log(id)
		require.True(t, ok)
		l, err := auth0log.Decode(raw)
		require.NoError(t, err)
		if l.Type == "fsa" || l.Type == "slo" {
			excluded++
		} else {
			sent = append(sent, id)
		}
		for _, a := range append(emailRE.FindAllString(string(raw), -1), ipv4RE.FindAllString(string(raw), -1)...) {
			inClear[a] = true
		}
	}
	require.NotZero(t, excluded)
	require.NotEmpty(t, inClear)

	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	h.WaitDelivered(sent, 30*time.Second)
	require.Eventually(t, func() bool {
		return h.Metric(`authpipe_forward_events_filtered_total{reason="exclude"`) == float64(excluded)
	}, 20*time.Second, 100*time.Millisecond)
	require.Zero(t, h.Metric(`authpipe_forward_events_filtered_total{reason="include"`))
	require.Eventually(t, func() bool { return h.Metric("authpipe_buffer_backlog_events") == 0 }, 20*time.Second, 100*time.Millisecond)
	require.Len(t, h.Segment.MessageIDs(), len(sent), "excluded types are not sent")

	for _, raw := range h.Segment.Messages() {
		msg := string(raw)
		require.Empty(t, emailRE.FindAllString(msg, -1), msg)
		for _, c := range ipv4RE.FindAllString(msg, -1) {
			_, err := netip.ParseAddr(c)
			require.Error(t, err, "IP address in clear: %s", msg)
		}
		for a := range inClear {
			require.NotContains(t, strings.ToLower(msg), strings.ToLower(a))
		}
	}
	h.RequireNoSecretsLogged()
}

func TestE2EThresholdAlertReachesAlertmanager(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
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
	h.ExtraEnv = append(h.ExtraEnv, "ALERTMANAGER_URL="+am.URL)

	h.AddEvents(200)
	p := h.Start()
	h.WaitReady(p, 20*time.Second)

	var burst []sim.Event
	now := time.Now().UTC()
	for i := range 40 {
		burst = append(burst, sim.Event{Type: "fp", IP: "203.0.113.7", UserName: fmt.Sprintf("victim%d@example.com", i%3),
			UserID: "auth0|victim", Date: now.Add(time.Duration(i) * 100 * time.Millisecond)})
	}
	h.Auth0.Add(burst...)
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
		return h.Metric(`authpipe_threshold_breached{rule="FailedLoginsPerIP"`) == 1
	}, 40*time.Second, 200*time.Millisecond)

	// The IP is in the alert, never in a metric label.
	resp, err := http.Get("http://" + h.Listen + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NotContains(t, string(body), "203.0.113.7")
	require.NotContains(t, string(body), "victim")
}

func TestE2EStatusPage(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	ids := h.AddEvents(500)
	p := h.StartEnv(append(h.Env(), "AUTHPIPE_PPROF=true"))
	h.WaitReady(p, 20*time.Second)
	h.WaitDelivered(ids, 60*time.Second)

	// AUTHPIPE_PPROF mounts Go's profiles (off by default: see
	// TestE2EDeliversEveryEventOnce).
	resp, err := http.Get("http://" + h.Listen + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), "goroutine profile:")

	resp, err = http.Get("http://" + h.Listen + "/")
	require.NoError(t, err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	page := string(body)
	require.Contains(t, page, h.Tenant)
	for _, stage := range []string{"poll", "buffer", "forward"} {
		require.Contains(t, page, stage)
	}
	require.Contains(t, page, "FailedLoginsPerIP", "rules and their state are shown")
	require.Contains(t, page, "500", "the stage counters are shown")
}
