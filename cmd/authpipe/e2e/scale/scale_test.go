// Package scale tests scale-out end to end: several processes against one
// Redis (the poller's leader killed and stalled), several tenants in one
// process on one Redis server, through Sentinel and on a real Redis
// Cluster, and `authpipe backfill` beside the worker.
package scale

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

// requestLog records who asked the Auth0 simulator for logs, and when: the
// bearer token identifies the process (each fetches its own).
type requestLog struct {
	mu   sync.Mutex
	reqs []loggedRequest
}

type loggedRequest struct {
	token string
	at    time.Time
}

func (l *requestLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v2/logs" {
			l.mu.Lock()
			l.reqs = append(l.reqs, loggedRequest{token: r.Header.Get("Authorization"), at: time.Now()})
			l.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// pollers returns, per poller (token), the times of its logs requests, the
// pollers in the order they started.
func (l *requestLog) pollers() [][]time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	byToken := map[string][]time.Time{}
	for _, r := range l.reqs {
		byToken[r.token] = append(byToken[r.token], r.at)
	}
	out := make([][]time.Time, 0, len(byToken))
	for _, s := range byToken {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0].Before(out[j][0]) })
	return out
}

// metricAt reads a metric from the process listening on addr (0 when it
// does not answer).
func metricAt(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return e2etest.MetricSum(t, addr, name)
}

// replica is one authpipe run of a multi-process test.
type replica struct {
	name, listen string
	p            *e2etest.Proc
}

// TestE2EReplicasPollerLeaderKilledAndStalled runs three processes against
// one Redis. Exactly one polls; killed mid-run (SIGKILL), another takes
// over within the lease period; stalled (SIGSTOP) past its lease, the third
// takes over and the stalled one, resumed, writes nothing. Every event is
// delivered, every duplicate under one messageId, and Auth0's request log
// shows that no two processes ever polled at once.
func TestE2EReplicasPollerLeaderKilledAndStalled(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	h.Auth0.SetRateLimit(3, 300) // about 500 events a second: the faults land mid-run
	h.Segment.SetDelay(20 * time.Millisecond)
	var rl requestLog
	srv := httptest.NewServer(rl.wrap(h.Auth0))
	t.Cleanup(srv.Close)
	h.Auth0URL = srv.URL
	ids := h.AddEvents(6000)
	start := time.Now()

	replicas := make([]*replica, 3)
	for i := range replicas {
		r := &replica{name: fmt.Sprintf("replica-%d", i), listen: e2etest.FreeAddr(t)}
		r.p = h.StartEnv(append(h.Env(), "AUTHPIPE_CONSUMER="+r.name, "AUTHPIPE_LISTEN="+r.listen))
		replicas[i] = r
	}
	leader := func(among []*replica) *replica {
		var found *replica
		require.Eventually(t, func() bool {
			found = nil
			n := 0
			for _, r := range among {
				if metricAt(t, r.listen, "authpipe_auth0_poller_leader") == 1 {
					found = r
					n++
				}
			}
			return n == 1
		}, 20*time.Second, 50*time.Millisecond, "exactly one poller leader")
		return found
	}

	first := leader(replicas)
	t.Logf("%s polls, %s after start", first.name, time.Since(start).Round(time.Millisecond))
	require.Eventually(t, func() bool { return h.Delivered(ids) > 1500 }, 40*time.Second, 20*time.Millisecond)
	require.Less(t, h.Delivered(ids), len(ids), "the kill must land mid-run")
	first.p.Kill()
	killedAt := time.Now()
	t.Logf("killed leader %s at %d of %d delivered", first.name, h.Delivered(ids), len(ids))
	rest := slices.DeleteFunc(slices.Clone(replicas), func(r *replica) bool { return r == first })

	second := leader(rest)
	t.Logf("%s took over after %s", second.name, time.Since(killedAt).Round(time.Millisecond))
	before := h.Delivered(ids)
	require.Eventually(t, func() bool { return h.Delivered(ids) > before+500 }, 30*time.Second, 20*time.Millisecond)
	require.Less(t, h.Delivered(ids), len(ids), "the stall must land mid-run")

	// Stall the new leader past its lease: the last one takes over; the
	// stalled one, resumed, finds its lease gone and stays a follower.
	require.NoError(t, second.p.Cmd.Process.Signal(syscall.SIGSTOP))
	third := slices.DeleteFunc(slices.Clone(rest), func(r *replica) bool { return r == second })
	require.Equal(t, third[0], leader(third))
	require.NoError(t, second.p.Cmd.Process.Signal(syscall.SIGCONT))
	resumedAt := time.Now()
	t.Logf("stalled %s, %s took over", second.name, third[0].name)
	require.Eventually(t, func() bool { return metricAt(t, second.listen, "authpipe_auth0_poller_leader") == 0 },
		10*time.Second, 20*time.Millisecond, "the resumed process lost its lease")

	h.WaitDelivered(ids, 90*time.Second)
	dups := h.RequireExactlyOnceByMessageID(ids)
	t.Logf("all delivered after %s; redelivered duplicates (absorbed by messageId): %d", time.Since(start).Round(time.Millisecond), dups)

	// Never two pollers at once: each poller's logs requests lie strictly
	// after the previous poller's last one. One allowance: the stalled
	// process may send, right on resuming, the one request it had prepared
	// when it was frozen (after its lease check); a read, whose page it
	// cannot write — its appends carry a stale fencing token.
	pollers := rl.pollers()
	require.Len(t, pollers, 3, "three pollers in turn")
	for i := 1; i < len(pollers); i++ {
		prev, next := pollers[i-1], pollers[i][0]
		var late []time.Time
		for _, at := range prev {
			if !at.Before(next) {
				late = append(late, at)
			}
		}
		if i == 2 && len(late) == 1 && late[0].Sub(resumedAt) < time.Second {
			t.Logf("the stalled poller sent the request it had prepared %s after resuming", late[0].Sub(resumedAt).Round(time.Microsecond))
			continue
		}
		require.Empty(t, late, "poller %d asked Auth0 for logs after poller %d started (%s)", i-1, i, next.Format(time.StampMicro))
	}
	// Every log was added to the stream once: no page was written twice by
	// two pollers racing (entries-added counts every entry ever added,
	// also those trimmed since every group acknowledged them), and the
	// checkpoint is the newest log.
	rdb := testredis.Client(t)
	info, err := rdb.XInfoStream(context.Background(), "authpipe:{"+h.Tenant+"}:stream").Result()
	require.NoError(t, err)
	require.EqualValues(t, len(ids), info.EntriesAdded)
	cp, err := rdb.Get(context.Background(), "authpipe:{"+h.Tenant+"}:checkpoint").Result()
	require.NoError(t, err)
	require.Equal(t, ids[len(ids)-1], cp)
	// The survivors' forwarders shared the consumer group.
	for _, r := range rest {
		require.Positive(t, metricAt(t, r.listen, "authpipe_forward_events_acked_total"), "%s forwarded", r.name)
	}
	h.RequireNoSecretsLogged()
}

// tenantWorld is one more tenant's Auth0 simulator for multi-tenant tests.
type tenantWorld struct {
	name, clientID, secret string
	auth0                  *sim.Auth0
	url                    string
	ids                    []string
}

func newTenantWorld(t *testing.T, name string, events int, seed uint64) *tenantWorld {
	w := &tenantWorld{name: name, clientID: name + "-client", secret: "secret-of-" + name + "-DO-NOT-LOG"}
	w.auth0 = sim.NewAuth0(sim.Auth0Options{ClientID: w.clientID, ClientSecret: w.secret})
	srv := httptest.NewServer(w.auth0)
	t.Cleanup(srv.Close)
	w.url = srv.URL
	rng := rand.New(rand.NewPCG(seed, 3))
	w.ids = w.auth0.Add(sim.GenerateEvents(rng, events, time.Now().Add(-time.Hour), time.Hour/time.Duration(events+1))...)
	return w
}

func deliveredOf(h *e2etest.Harness, w *tenantWorld) int {
	got := h.Segment.MessageIDs()
	n := 0
	for _, id := range w.ids {
		if got[w.name+"-"+id] > 0 {
			n++
		}
	}
	return n
}

// multiTenantEnv writes a config file listing the worlds as tenants and
// returns the environment of an authpipe run on redisURL: the tenants'
// secrets come from AUTH0_CLIENT_SECRET_<NAME> and its _FILE form.
func multiTenantEnv(h *e2etest.Harness, redisURL string, worlds ...*tenantWorld) []string {
	dir := h.T.TempDir()
	var yml strings.Builder
	yml.WriteString("auth0:\n  poll_interval: 200ms\ntenants:\n")
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"AUTHPIPE_CONFIG=" + filepath.Join(dir, "authpipe.yml"),
		"SEGMENT_WRITE_KEY=" + e2etest.WriteKey, "SEGMENT_ENDPOINT=" + h.SegmentURL, "SEGMENT_FLUSH_INTERVAL=100ms",
		"REDIS_URL=" + redisURL, "AUTHPIPE_CONSUMER=e2e-worker", "AUTHPIPE_LISTEN=" + h.Listen,
		"AUTHPIPE_LEASE_TTL=2s",
	}
	for i, w := range worlds {
		fmt.Fprintf(&yml, "  - name: %s\n    auth0:\n      domain: %s\n      client_id: %s\n", w.name, w.url, w.clientID)
		secretVar := config.TenantEnv("AUTH0_CLIENT_SECRET", w.name)
		if i%2 == 0 {
			env = append(env, secretVar+"="+w.secret)
			continue
		}
		path := filepath.Join(dir, w.name+".secret")
		require.NoError(h.T, os.WriteFile(path, []byte(w.secret+"\n"), 0o600))
		env = append(env, secretVar+"_FILE="+path)
	}
	require.NoError(h.T, os.WriteFile(filepath.Join(dir, "authpipe.yml"), []byte(yml.String()), 0o600))
	return env
}

// TestE2ETwoTenants: two tenants in one config file, on one Redis server,
// on a master found through Redis Sentinel and on a real three-node Redis
// Cluster (REDIS_URL redis://, redis-sentinel://, redis-cluster://), keep
// separate streams and
// checkpoints; every event reaches Segment once under its tenant's
// messageId; metrics carry the configured tenant names.
func TestE2ETwoTenants(t *testing.T) {
	for _, mode := range []string{"redis", "sentinel", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			var (
				redisURL string
				rdb      redis.UniversalClient
			)
			switch mode {
			case "cluster":
				cl := testredis.StartCluster(t)
				redisURL, rdb = cl.URL(), cl.Client(t)
			case "sentinel":
				s := testredis.StartSentinel(t)
				redisURL, rdb = s.URL(), redis.NewClient(&redis.Options{Addr: s.Master.Addr})
				t.Cleanup(func() { _ = rdb.Close() })
			default:
				redisURL, rdb = "redis://"+testredis.Addr(t)+"/0", testredis.Client(t)
			}
			h := e2etest.NewHarness(t, authpipeBin, "")
			suffix := fmt.Sprintf("%d", rand.Uint32())
			a := newTenantWorld(t, "acme-"+suffix, 3000, 1)
			b := newTenantWorld(t, "beta-"+suffix, 2000, 2)
			p := h.StartEnv(multiTenantEnv(h, redisURL, a, b))
			h.WaitReady(p, 20*time.Second)
			require.Eventually(t, func() bool {
				return deliveredOf(h, a) == len(a.ids) && deliveredOf(h, b) == len(b.ids)
			}, 90*time.Second, 100*time.Millisecond, "delivered %d of %d and %d of %d", deliveredOf(h, a), len(a.ids), deliveredOf(h, b), len(b.ids))
			require.Len(t, h.Segment.MessageIDs(), len(a.ids)+len(b.ids), "every event under exactly one messageId")

			ctx := context.Background()
			for _, w := range []*tenantWorld{a, b} {
				key := func(name string) string { return "authpipe:{" + w.name + "}:" + name }
				cp, err := rdb.Get(ctx, key("checkpoint")).Result()
				require.NoError(t, err)
				require.Equal(t, w.ids[len(w.ids)-1], cp, "%s: its own checkpoint", w.name)
				// Its own stream got its events only: as many as it has,
				// and what the trim (every group acknowledged) left of
				// them, in order.
				info, err := rdb.XInfoStream(ctx, key("stream")).Result()
				require.NoError(t, err)
				require.EqualValues(t, len(w.ids), info.EntriesAdded, "%s: entries ever added to its stream", w.name)
				msgs, err := rdb.XRange(ctx, key("stream"), "-", "+").Result()
				require.NoError(t, err)
				got := make([]string, len(msgs))
				for i, m := range msgs {
					got[i], _ = m.Values["id"].(string)
				}
				require.Equal(t, w.ids[len(w.ids)-len(got):], got, "%s: its own stream holds its events only", w.name)
				require.Equal(t, float64(len(w.ids)), h.Metric(`authpipe_auth0_events_polled_total{tenant="`+w.name+`"`))
				require.Equal(t, 1.0, h.Metric(`authpipe_auth0_poller_leader{tenant="`+w.name+`"`))
			}
			require.Eventually(t, func() bool {
				return h.Metric(`authpipe_forward_events_acked_total{tenant="`+a.name+`"`) == float64(len(a.ids)) &&
					h.Metric(`authpipe_forward_events_acked_total{tenant="`+b.name+`"`) == float64(len(b.ids))
			}, 20*time.Second, 100*time.Millisecond)
			if mode == "cluster" {
				// The tenants' hash tags put them on different nodes here.
				na, err := rdb.(*redis.ClusterClient).MasterForKey(ctx, "authpipe:{"+a.name+"}:stream")
				require.NoError(t, err)
				nb, err := rdb.(*redis.ClusterClient).MasterForKey(ctx, "authpipe:{"+b.name+"}:stream")
				require.NoError(t, err)
				t.Logf("tenant %s on %s, tenant %s on %s", a.name, na.Options().Addr, b.name, nb.Options().Addr)
			}
			logs := h.Logs()
			for _, w := range []*tenantWorld{a, b} {
				require.NotContains(t, logs, w.secret)
			}
			wantMode := map[string]string{"redis": "single", "sentinel": "sentinel", "cluster": "cluster"}[mode]
			require.Contains(t, logs, `"redis":"`+wantMode+`"`, "the UniversalClient kind REDIS_URL names")
			require.NotContains(t, logs, "CROSSSLOT", "every command of a tenant stays in its hash slot")
			require.NotContains(t, logs, `"level":"ERROR"`)
			require.NoError(t, p.Cmd.Process.Signal(syscall.SIGTERM))
			<-p.Done()
			require.NoError(t, p.Err(), "clean exit")
		})
	}
}

// TestE2EBackfill: a checkpoint set ahead skipped the last hour; authpipe
// backfill --since re-polls it into the buffer without moving the
// checkpoint, again adds nothing, and the worker then forwards each event
// once. A window beyond the retention is refused.
func TestE2EBackfill(t *testing.T) {
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	ids := h.AddEvents(700)
	rdb := testredis.Client(t)
	ctx := context.Background()
	ahead := auth0log.CheckpointAt(time.Now())
	require.NoError(t, rdb.Set(ctx, "authpipe:{"+h.Tenant+"}:checkpoint", ahead, 0).Err())

	backfill := func(args ...string) (int, string, string) {
		cmd := exec.Command(authpipeBin, append([]string{"backfill"}, args...)...)
		cmd.Env = h.Env()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		h.Log(stderr.Bytes())
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode(), stdout.String(), stderr.String()
		}
		require.NoError(t, err)
		return 0, stdout.String(), stderr.String()
	}

	code, out, errOut := backfill("--since", "2h")
	require.Zero(t, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, out, fmt.Sprintf("%s: done: %d logs in the window, %d new to the buffer, 0 buffered already", h.Tenant, len(ids), len(ids)))
	n, err := rdb.XLen(ctx, "authpipe:{"+h.Tenant+"}:stream").Result()
	require.NoError(t, err)
	require.EqualValues(t, len(ids), n)
	cp, err := rdb.Get(ctx, "authpipe:{"+h.Tenant+"}:checkpoint").Result()
	require.NoError(t, err)
	require.Equal(t, ahead, cp, "backfill never moves the checkpoint")

	code, out, errOut = backfill("--since", time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339), "--tenant", h.Tenant)
	require.Zero(t, code, "stdout: %s\nstderr: %s", out, errOut)
	require.Contains(t, out, fmt.Sprintf("done: %d logs in the window, 0 new to the buffer, %d buffered already", len(ids), len(ids)))

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"beyond retention": {[]string{"--since", "200h"}, "older than tenant " + h.Tenant + "'s log retention (AUTH0_LOG_RETENTION 144h0m0s)"},
		"no since":         {nil, "--since is required"},
		"bad time":         {[]string{"--since", "yesterday"}, `"yesterday" is not a time`},
		"unknown tenant":   {[]string{"--since", "1h", "--tenant", "nope"}, `--tenant "nope" is not a configured tenant`},
		"reversed":         {[]string{"--since", "1h", "--until", "2h"}, "is not before --until"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := backfill(tc.args...)
			require.Equal(t, 2, code)
			require.Contains(t, errOut, tc.want)
		})
	}

	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	h.WaitDelivered(ids, 60*time.Second)
	require.Zero(t, h.RequireExactlyOnceByMessageID(ids))
	h.RequireNoSecretsLogged()
}
