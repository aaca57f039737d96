package e2etest

import (
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
)

// RunEnv is the environment of `authpipe run` against the simulators.
type RunEnv struct {
	Auth0URL, SegmentURL string
	RedisAddr            string // "" for the embedded buffer
	Tenant, Listen       string
}

// List returns the variables, with short poll and flush intervals and a
// short lease and reclaim period, so that tests meet faults quickly.
func (e RunEnv) List() []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"AUTH0_DOMAIN=" + e.Auth0URL,
		"AUTH0_CLIENT_ID=" + ClientID,
		"AUTH0_CLIENT_SECRET=" + ClientSecret,
		"AUTH0_POLL_INTERVAL=200ms",
		"SEGMENT_WRITE_KEY=" + WriteKey,
		"SEGMENT_ENDPOINT=" + e.SegmentURL,
		"SEGMENT_FLUSH_INTERVAL=100ms",
		"AUTHPIPE_TENANT=" + e.Tenant,
		"AUTHPIPE_CONSUMER=e2e-worker",
		"AUTHPIPE_RECLAIM_IDLE=3s",
		"AUTHPIPE_LEASE_TTL=2s", // a killed poller's lease frees up quickly
		"AUTHPIPE_LISTEN=" + e.Listen,
		"AUTHPIPE_LOG_LEVEL=info",
	}
	if e.RedisAddr != "" {
		env = append(env, "REDIS_URL=redis://"+e.RedisAddr+"/0")
	}
	return env
}

// AddEvents puts n generated events, dated over the last hour, into the
// Auth0 simulator and returns their log_ids.
func AddEvents(a *sim.Auth0, n int) []string {
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	return a.Add(sim.GenerateEvents(rng, n, time.Now().Add(-time.Hour), time.Hour/time.Duration(n+1))...)
}

// Delivered counts the log_ids of tenant that Segment received at least
// once.
func Delivered(seg *sim.Segment, tenant string, ids []string) int {
	got := seg.MessageIDs()
	n := 0
	for _, id := range ids {
		if got[tenant+"-"+id] > 0 {
			n++
		}
	}
	return n
}

// WaitDelivered waits until Segment has received every one of ids.
func WaitDelivered(t *testing.T, seg *sim.Segment, tenant string, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if Delivered(seg, tenant, ids) == len(ids) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("delivered %d of %d events within %s", Delivered(seg, tenant, ids), len(ids), timeout)
}

// RequireExactlyOnceByMessageID checks that Segment saw every expected
// event under its deterministic messageId and nothing else: redeliveries,
// if any, reuse the messageId, so Segment's dedupe absorbs them. It returns
// the number of redelivered copies.
func RequireExactlyOnceByMessageID(t *testing.T, seg *sim.Segment, tenant string, ids []string) (duplicates int) {
	t.Helper()
	got := seg.MessageIDs()
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[tenant+"-"+id] = true
	}
	for mid, n := range got {
		require.True(t, want[mid], "unexpected messageId %s", mid)
		duplicates += n - 1
	}
	require.Len(t, got, len(ids), "every event under exactly one messageId")
	for _, raw := range seg.Messages() {
		var m struct {
			MessageID  string `json:"messageId"`
			Properties struct {
				LogID string `json:"log_id"`
			} `json:"properties"`
		}
		require.NoError(t, json.Unmarshal(raw, &m))
		require.Equal(t, tenant+"-"+m.Properties.LogID, m.MessageID)
	}
	return duplicates
}

// RequireNoSecrets checks that out (what authpipe printed) holds neither
// the client secret nor the write key.
func RequireNoSecrets(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{ClientSecret, WriteKey} {
		require.NotContains(t, out, s, "a secret reached the logs")
	}
}

// ReportOnFailure logs, when the test has failed, the authpipe_ metrics at
// listen and the tail of what the processes printed (logs()).
func ReportOnFailure(t *testing.T, listen string, logs func() string) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if resp, err := http.Get("http://" + listen + "/metrics"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var keep []string
			for _, line := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(line, "authpipe_") {
					keep = append(keep, line)
				}
			}
			t.Logf("authpipe metrics at failure:\n%s", strings.Join(keep, "\n"))
		}
		t.Logf("authpipe output:\n%s", Tail(logs(), 12000))
	})
}

// Stop sends SIGTERM and waits up to timeout for the process to exit.
func (p *Proc) Stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s of SIGTERM", p.Cmd.Path, timeout)
	}
}
