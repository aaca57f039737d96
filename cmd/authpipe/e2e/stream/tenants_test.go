package stream

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

// TestE2EStreamSeveralTenants: with a tenants list each tenant's stream
// posts to /auth0/logs/<name> with a token of its own. Each tenant's
// pushed logs reach Segment under that tenant's messageId and are counted
// under its label; one tenant's token on the other's path is 401, and the
// single-tenant path is 404.
func TestE2EStreamSeveralTenants(t *testing.T) {
	t.Parallel()
	segment := sim.NewSegment(sim.SegmentOptions{WriteKey: e2etest.WriteKey})
	segSrv := httptest.NewServer(segment)
	t.Cleanup(segSrv.Close)
	suffix := fmt.Sprint(rand.Uint32())
	names := []string{"acme" + suffix, "beta" + suffix}
	tokens := map[string]string{}
	listen, streamAddr := e2etest.FreeAddr(t), e2etest.FreeAddr(t)
	dir := t.TempDir()
	var yml strings.Builder
	fmt.Fprintf(&yml, "auth0:\n  poll_interval: 200ms\nstream:\n  listen: %q\ntenants:\n", streamAddr)
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"AUTHPIPE_CONFIG=" + filepath.Join(dir, "authpipe.yml"),
		"SEGMENT_WRITE_KEY=" + e2etest.WriteKey, "SEGMENT_ENDPOINT=" + segSrv.URL, "SEGMENT_FLUSH_INTERVAL=100ms",
		"REDIS_URL=redis://" + testredis.Addr(t) + "/0", "AUTHPIPE_CONSUMER=e2e-worker", "AUTHPIPE_LISTEN=" + listen,
	}
	for _, name := range names {
		a := httptest.NewServer(sim.NewAuth0(sim.Auth0Options{ClientID: e2etest.ClientID, ClientSecret: e2etest.ClientSecret}))
		t.Cleanup(a.Close)
		fmt.Fprintf(&yml, "  - name: %s\n    auth0:\n      domain: %s\n      client_id: %s\n", name, a.URL, e2etest.ClientID)
		tokens[name] = "Bearer " + name + "-stream-token-0123456789abcdef"
		env = append(env, config.TenantEnv("AUTH0_CLIENT_SECRET", name)+"="+e2etest.ClientSecret,
			config.TenantEnv("AUTH0_STREAM_TOKEN", name)+"="+tokens[name])
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authpipe.yml"), []byte(yml.String()), 0o600))
	logs := &e2etest.SyncBuf{}
	e2etest.ReportOnFailure(t, listen, logs.String)
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir, cmd.Env = repoRoot, env
	p := e2etest.Start(t, cmd, logs)
	p.WaitHTTP(t, "http://"+listen+"/-/ready", 30*time.Second)

	post := func(path, auth string, body []byte) int {
		req, err := http.NewRequest(http.MethodPost, "http://"+streamAddr+path, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	pushed := map[string][]string{}
	for i, name := range names {
		batch := elsewhere(t, 20+10*i)
		pushed[name] = logIDs(batch)
		body := sim.StreamBody(sim.StreamJSONArray, batch)
		other := names[1-i]
		require.Equal(t, http.StatusUnauthorized, post("/auth0/logs/"+name, tokens[other], body), "another tenant's token")
		require.Equal(t, http.StatusNotFound, post("/auth0/logs", tokens[name], body), "no single-tenant path with several tenants")
		require.Equal(t, http.StatusOK, post("/auth0/logs/"+name, tokens[name], body))
	}
	for _, name := range names {
		e2etest.WaitDelivered(t, segment, name, pushed[name], 30*time.Second)
		require.Equal(t, float64(len(pushed[name])),
			e2etest.MetricSum(t, listen, fmt.Sprintf(`authpipe_stream_events_total{outcome="new",tenant=%q`, name)))
		require.Equal(t, 1.0, e2etest.MetricSum(t, listen, fmt.Sprintf(`authpipe_stream_requests_total{code="401",outcome="unauthorized",tenant=%q`, name)))
	}
	require.Len(t, segment.MessageIDs(), len(pushed[names[0]])+len(pushed[names[1]]), "each log once, under its tenant")
	require.Equal(t, 2.0, e2etest.MetricSum(t, listen, `authpipe_stream_requests_total{code="404",outcome="not_found",tenant=""`))
	for _, name := range names {
		require.NotContains(t, logs.String(), name+"-stream-token", "a stream token reached the logs")
	}
}
