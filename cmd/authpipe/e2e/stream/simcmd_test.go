package stream

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
)

// TestE2ESimPushesToAURL: `authpipe sim --stream-url` pushes the logs it
// generates as an Auth0 Log Stream does, in the format and with the
// Authorization header asked for; its status lines count the pushes.
func TestE2ESimPushesToAURL(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		auths = map[string]int{}
		ids   = map[string]bool{}
		bad   []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var records []struct {
			LogID string          `json:"log_id"`
			Data  json.RawMessage `json:"data"`
		}
		err := json.Unmarshal(body, &records)
		mu.Lock()
		defer mu.Unlock()
		auths[r.Header.Get("Authorization")]++
		if err != nil || r.Header.Get("Content-Type") != "application/json" || r.URL.Path != "/auth0/logs" {
			bad = append(bad, string(body[:min(len(body), 200)]))
		}
		for _, rec := range records {
			var data struct {
				LogID string `json:"log_id"`
			}
			if json.Unmarshal(rec.Data, &data) != nil || data.LogID != rec.LogID {
				bad = append(bad, rec.LogID)
			}
			ids[rec.LogID] = true
		}
	}))
	t.Cleanup(hook.Close)
	const token = "Bearer sim-push-token-0123456789abcdef0123"
	s := e2etest.StartSim(t, authpipeBin, "--rate", "100", "--seed", "3", "--stream-url", hook.URL+"/auth0/logs",
		"--stream-format", "JSONARRAY", "--stream-token", token)
	e2etest.WaitFor(t, 15*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(ids) >= 200 },
		func() string { return "the sim pushed too little" })
	require.NoError(t, s.Cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("authpipe sim did not stop within 5 s of SIGTERM")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, bad, "pushes that are not JSONARRAY stream batches")
	require.Equal(t, []string{token}, keys(auths), "every push carries the token")
	require.Contains(t, s.Out.String(), "authpipe sim stopped: stream pushed")
	require.NotContains(t, s.Out.String(), "sim-push-token", "the token reached the output")

	// Push flags need a URL; a drop share outside [0, 1] is refused.
	for _, args := range [][]string{{"--stream-drop", "0.1"}, {"--stream-url", hook.URL, "--stream-drop", "2"}, {"--stream-url", hook.URL, "--stream-format", "XML"}} {
		cmd := exec.Command(authpipeBin, append([]string{"sim", "--client-id", "c", "--client-secret", "s", "--write-key", "k"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%v: %s", args, out.String())
		require.Equal(t, 2, exit.ExitCode(), "%v: %s", args, out.String())
		require.True(t, strings.Contains(out.String(), "--stream"), "%v: %s", args, out.String())
	}
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
