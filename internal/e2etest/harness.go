package e2etest

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// Harness is one tenant's world for `authpipe run` as a subprocess: the
// Auth0 and Segment simulators over real HTTP, a Redis (or the embedded
// buffer), the environment, and what every process it started printed.
type Harness struct {
	T       *testing.T
	Bin     string // the authpipe binary (Main builds it)
	Auth0   *sim.Auth0
	Segment *sim.Segment
	// Auth0URL and SegmentURL are where authpipe finds the simulators; a
	// test may put a wrapping server in front of one.
	Auth0URL, SegmentURL string
	RedisAddr            string // "" for the embedded buffer
	Tenant               string
	Listen               string
	ExtraEnv             []string // more environment for Env
	Dir                  string   // working directory of authpipe run; default the repository root

	logs SyncBuf // every process's output, for failure reports and secret checks
}

// NewHarness builds a harness with a random tenant name on a free
// address, against the Redis at redisAddr ("" for the embedded buffer),
// and reports the metrics and logs when the test fails.
func NewHarness(t *testing.T, bin, redisAddr string) *Harness {
	t.Helper()
	h := &Harness{
		T:         t,
		Bin:       bin,
		Auth0:     sim.NewAuth0(sim.Auth0Options{ClientID: ClientID, ClientSecret: ClientSecret}),
		Segment:   sim.NewSegment(sim.SegmentOptions{WriteKey: WriteKey}),
		RedisAddr: redisAddr,
		Tenant:    fmt.Sprintf("e2e%d", rand.Uint32()),
		Listen:    FreeAddr(t),
	}
	a := httptest.NewServer(h.Auth0)
	s := httptest.NewServer(h.Segment)
	t.Cleanup(a.Close)
	t.Cleanup(s.Close)
	h.Auth0URL, h.SegmentURL = a.URL, s.URL
	ReportOnFailure(t, h.Listen, h.Logs)
	return h
}

// AddEvents puts n events, dated over the last hour, into the Auth0
// simulator.
func (h *Harness) AddEvents(n int) []string { return AddEvents(h.Auth0, n) }

// Env is the environment of authpipe run (RunEnv) with ExtraEnv.
func (h *Harness) Env() []string {
	env := RunEnv{Auth0URL: h.Auth0URL, SegmentURL: h.SegmentURL, RedisAddr: h.RedisAddr, Tenant: h.Tenant, Listen: h.Listen}
	return append(env.List(), h.ExtraEnv...)
}

// Start starts authpipe run with Env.
func (h *Harness) Start() *Proc {
	h.T.Helper()
	return h.StartEnv(h.Env())
}

// StartEnv starts authpipe run with the environment env, in Dir; its
// output goes to the harness' log.
func (h *Harness) StartEnv(env []string) *Proc {
	h.T.Helper()
	cmd := exec.Command(h.Bin, "run")
	cmd.Dir = cmp.Or(h.Dir, RepoRoot(h.T))
	cmd.Env = env
	return Start(h.T, cmd, &h.logs)
}

// Log appends b to the harness' log (the output of a command a test ran
// itself).
func (h *Harness) Log(b []byte) { _, _ = h.logs.Write(b) }

// Logs is everything the harness' processes printed.
func (h *Harness) Logs() string { return h.logs.String() }

// WaitReady waits until /-/ready answers 200, failing if p exits first.
func (h *Harness) WaitReady(p *Proc, timeout time.Duration) {
	h.T.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.Done():
			h.T.Fatalf("authpipe exited before it was ready: %v", p.Err())
		default:
		}
		resp, err := http.Get("http://" + h.Listen + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.T.Fatalf("authpipe not ready within %s", timeout)
}

// Delivered counts the log_ids of ids Segment has received at least once.
func (h *Harness) Delivered(ids []string) int { return Delivered(h.Segment, h.Tenant, ids) }

// WaitDelivered waits until Segment has received every one of ids.
func (h *Harness) WaitDelivered(ids []string, timeout time.Duration) {
	h.T.Helper()
	WaitDelivered(h.T, h.Segment, h.Tenant, ids, timeout)
}

// RequireExactlyOnceByMessageID checks that Segment saw every expected
// event under its deterministic messageId and nothing else (see
// RequireExactlyOnceByMessageID), and returns the redelivered copies.
func (h *Harness) RequireExactlyOnceByMessageID(ids []string) (duplicates int) {
	h.T.Helper()
	return RequireExactlyOnceByMessageID(h.T, h.Segment, h.Tenant, ids)
}

// RequireNoSecretsLogged checks that no process printed a secret.
func (h *Harness) RequireNoSecretsLogged() {
	h.T.Helper()
	RequireNoSecrets(h.T, h.Logs())
}

// RequireComponents checks that every line authpipe wrote is a JSON log
// entry naming its component, and that each of want wrote some: a package
// whose logger lost its component key shows as main's ("authpipe").
func (h *Harness) RequireComponents(want ...string) {
	h.T.Helper()
	logs := h.Logs()
	got := testlogs.Components(logs)
	require.NotContains(h.T, got, "", "a line without a component:\n%s", logs)
	require.Subset(h.T, got, want)
}

// Metric sums the samples of name (MetricSum) at Listen.
func (h *Harness) Metric(name string) float64 {
	h.T.Helper()
	return MetricSum(h.T, h.Listen, name)
}

// RepoRoot is the repository's root directory: the first directory up
// from the working directory (a test's package directory) that holds
// go.mod.
func RepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("find the repository root: %v", err)
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("find the repository root: no go.mod above the working directory")
		}
		dir = up
	}
}
