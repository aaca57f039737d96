// Package dataloss tests, end to end, how authpipe comes through Redis
// losing its data (issue 12): `authpipe run` as a subprocess delivers a
// backlog and a trickle of new events from the Auth0 simulator to the
// Segment simulator (over real HTTP) through a real redis-server, which is
// restarted on an empty data dir, flushed, or loses its consumer groups or
// its checkpoint. Every event must still reach Segment, duplicates under
// their one messageId, the loss counted once, and the shipped alert must
// fire on the series authpipe exports. Also: unsafe Redis settings at
// start, and the embedded buffer's file replaced by an older copy while
// authpipe is stopped.
//
// A package of its own (about a minute, build included), so that
// `go test ./...` runs it beside the other end-to-end packages.
package dataloss

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

const repoRoot = "../../../.."

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

// world is one tenant: the Auth0 and Segment simulators over real HTTP, the
// environment of authpipe, and what its processes print.
type world struct {
	t       *testing.T
	auth0   *sim.Auth0
	segment *sim.Segment
	env     e2etest.RunEnv
	extra   []string // more environment
	logs    *e2etest.SyncBuf
}

func newWorld(t *testing.T, redisAddr string) *world {
	t.Helper()
	w := &world{
		t:       t,
		auth0:   sim.NewAuth0(sim.Auth0Options{ClientID: e2etest.ClientID, ClientSecret: e2etest.ClientSecret}),
		segment: sim.NewSegment(sim.SegmentOptions{WriteKey: e2etest.WriteKey}),
		logs:    &e2etest.SyncBuf{},
	}
	a, s := httptest.NewServer(w.auth0), httptest.NewServer(w.segment)
	t.Cleanup(a.Close)
	t.Cleanup(s.Close)
	w.env = e2etest.RunEnv{Auth0URL: a.URL, SegmentURL: s.URL, RedisAddr: redisAddr,
		Tenant: fmt.Sprintf("e2e%d", rand.Uint32()), Listen: e2etest.FreeAddr(t)}
	e2etest.ReportOnFailure(t, w.env.Listen, w.output)
	return w
}

func (w *world) environ() []string { return append(w.env.List(), w.extra...) }

// start runs `authpipe run` with env (default: the world's environment).
func (w *world) start(env ...string) *e2etest.Proc {
	w.t.Helper()
	if env == nil {
		env = w.environ()
	}
	cmd := exec.Command(authpipeBin, "run")
	cmd.Dir = repoRoot
	cmd.Env = env
	return e2etest.Start(w.t, cmd, w.logs)
}

func (w *world) waitReady(p *e2etest.Proc) {
	w.t.Helper()
	p.WaitHTTP(w.t, "http://"+w.env.Listen+"/-/ready", 30*time.Second)
}

func (w *world) output() string { return w.logs.String() }

func (w *world) metric(name string) float64 {
	w.t.Helper()
	return e2etest.MetricSum(w.t, w.env.Listen, name)
}

func (w *world) delivered(ids []string) int { return e2etest.Delivered(w.segment, w.env.Tenant, ids) }

// trickle adds one event dated now every interval until the returned stop
// is called; stop returns the log_ids added.
func (w *world) trickle(every time.Duration) (stop func() []string) {
	done := make(chan struct{})
	var ids []string
	var wg sync.WaitGroup
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				ids = append(ids, w.auth0.Add(sim.GenerateEvents(rng, 1, time.Now(), time.Millisecond)...)...)
			}
		}
	})
	return func() []string {
		close(done)
		wg.Wait()
		return ids
	}
}

// logLines returns authpipe's log lines that contain every one of subs.
func (w *world) logLines(subs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(w.output(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// series returns the scraped lines of a metric family (name{labels} value).
func (w *world) series(name string) []string {
	w.t.Helper()
	var out []string
	for line := range strings.SplitSeq(e2etest.Scrape(w.t, w.env.Listen), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			out = append(out, line)
		}
	}
	return out
}

// lossCase is one way Redis loses authpipe's data.
type lossCase struct {
	name   string
	inject func(t *testing.T, w *world, c *redis.Client, srv *testredis.Server)
	found  []string // kinds the incident names (authpipe_buffer_data_loss_found)
	repoll bool     // events must be polled again
}

var lossCases = []lossCase{
	{
		name: "redis restarted on an empty data dir",
		inject: func(t *testing.T, _ *world, _ *redis.Client, srv *testredis.Server) {
			require.NoError(t, srv.RestartEmpty())
		},
		found:  []string{"checkpoint", "consumer_group", "fencing_token", "stream"},
		repoll: true,
	},
	{
		name: "FLUSHALL",
		inject: func(t *testing.T, _ *world, c *redis.Client, _ *testredis.Server) {
			require.NoError(t, c.FlushAll(context.Background()).Err())
		},
		found:  []string{"checkpoint", "consumer_group", "fencing_token", "stream"},
		repoll: true,
	},
	{
		name: "XGROUP DESTROY of the consumer groups",
		inject: func(t *testing.T, w *world, c *redis.Client, _ *testredis.Server) {
			for _, g := range []string{"forward", "thresholds"} {
				require.NoError(t, c.XGroupDestroy(context.Background(), "authpipe:{"+w.env.Tenant+"}:stream", g).Err())
			}
		},
		found: []string{"consumer_group"},
	},
	{
		name: "DEL of the checkpoint",
		inject: func(t *testing.T, w *world, c *redis.Client, _ *testredis.Server) {
			require.NoError(t, c.Del(context.Background(), "authpipe:{"+w.env.Tenant+"}:checkpoint").Err())
		},
		found:  []string{"checkpoint"},
		repoll: true,
	},
}

func TestE2EBufferLosesData(t *testing.T) {
	t.Parallel()
	for _, lc := range lossCases {
		t.Run(lc.name, func(t *testing.T) {
			t.Parallel()
			srv := testredis.Start(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = c.Close() })
			w := newWorld(t, srv.Addr)
			w.segment.SetDelay(20 * time.Millisecond)
			backlog := e2etest.AddEvents(w.auth0, 3000)
			p := w.start()
			w.waitReady(p)
			stopTrickle := w.trickle(100 * time.Millisecond)
			require.Eventually(t, func() bool { return w.delivered(backlog) > 500 }, 60*time.Second, 20*time.Millisecond)
			// Segment stops accepting for a while, so that the loss meets
			// events that are buffered and not yet delivered, and authpipe
			// has found how far delivery got.
			w.segment.SetStatus(http.StatusServiceUnavailable)
			require.Eventually(t, func() bool {
				return w.metric("authpipe_buffer_backlog_events") > 500 &&
					w.metric("authpipe_buffer_delivered_watermark_timestamp_seconds") > 0
			}, 60*time.Second, 50*time.Millisecond, "events waiting in the buffer, the watermark known")
			require.Zero(t, w.metric("authpipe_buffer_data_loss_total"), "created at 0, nothing lost yet")
			before := w.series("authpipe_buffer_data_loss_total")

			lc.inject(t, w, c, srv)
			counted := w.metric(`authpipe_threshold_events_total{result="counted"`)
			time.Sleep(time.Second)
			w.segment.SetStatus(0)
			time.Sleep(time.Second) // the trickle goes on through the loss
			all := append(backlog, stopTrickle()...)
			e2etest.WaitDelivered(t, w.segment, w.env.Tenant, all, 120*time.Second)
			dups := e2etest.RequireExactlyOnceByMessageID(t, w.segment, w.env.Tenant, all)
			t.Logf("%d events delivered, %d duplicates (same messageId)", len(all), dups)

			require.Equal(t, 1.0, w.metric("authpipe_buffer_data_loss_total"), "one loss, counted once")
			lines := w.logLines(`"level":"ERROR"`, `"msg":"buffer lost data"`)
			require.Len(t, lines, 1, "one ERROR line")
			for _, k := range lc.found {
				require.Equal(t, 1.0, w.metric(`authpipe_buffer_data_loss_found{tenant="`+w.env.Tenant+`",what="`+k+`"`), k)
			}
			require.Equal(t, float64(len(lc.found)), w.metric("authpipe_buffer_data_loss_found"), "nothing else named")
			polled := w.metric("authpipe_auth0_events_polled_total")
			if lc.repoll {
				require.Contains(t, lines[0], `"repoll_from_log_id":"900`)
				require.Greater(t, polled, float64(len(all)), "the lost window was polled again")
				// Said again if the poller restarts (its lease) before the re-poll got going.
				require.NotEmpty(t, w.logLines(`"msg":"the buffer lost data: polling Auth0 again from the last point known delivered"`))
			} else {
				require.Contains(t, lines[0], "nothing to poll again")
				require.Equal(t, float64(len(all)), polled, "nothing polled twice")
			}
			e2etest.RequireNoSecrets(t, w.output())

			// The threshold checks keep counting: their group is back and
			// catches up with the stream.
			stream := "authpipe:{" + w.env.Tenant + "}:stream"
			require.Eventually(t, func() bool {
				gs, err := c.XInfoGroups(context.Background(), stream).Result()
				if err != nil {
					return false
				}
				for _, g := range gs {
					if g.Name == "thresholds" {
						return g.Lag == 0 && g.Pending == 0
					}
				}
				return false
			}, 30*time.Second, 100*time.Millisecond, "the thresholds group has read and counted the stream")
			require.Greater(t, w.metric(`authpipe_threshold_events_total{result="counted"`), counted)
			select {
			case <-p.Done():
				t.Fatalf("authpipe exited: %v", p.Err())
			default:
			}

			// The status page shows the incident.
			resp, err := http.Get("http://" + w.env.Listen + "/")
			require.NoError(t, err)
			var page strings.Builder
			_, _ = bufio.NewReader(resp.Body).WriteTo(&page)
			resp.Body.Close()
			require.Contains(t, page.String(), "The buffer lost data at")

			// The shipped alert fires on the series as authpipe exports them.
			requireDataLossAlert(t, w, before, w.series("authpipe_buffer_data_loss_total"))
		})
	}
}

// requireDataLossAlert runs promtool test rules on the shipped rules with
// the data-loss counter as scraped before and after the loss (labels as
// authpipe exports them, job and instance as Prometheus adds them): the
// alert must fire for the tenant, with its labels and annotations as
// shipped.
func requireDataLossAlert(t *testing.T, w *world, before, after []string) {
	t.Helper()
	promtool := e2etest.NeedTool(t, "promtool")
	require.Len(t, before, 1)
	require.Len(t, after, 1)
	series := func(line string) (labels, value string) {
		i := strings.LastIndexByte(line, ' ')
		return strings.TrimSuffix(strings.TrimPrefix(line[:i], "authpipe_buffer_data_loss_total{"), "}"), line[i+1:]
	}
	labels, v0 := series(before[0])
	labels2, v1 := series(after[0])
	require.Equal(t, labels, labels2)
	require.Equal(t, "0", v0)
	require.Equal(t, "1", v1)

	rules, err := filepath.Abs(filepath.Join(repoRoot, "alerts/prometheus/authpipe.rules.yml"))
	require.NoError(t, err)
	raw, err := os.ReadFile(rules)
	require.NoError(t, err)
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &file))
	var ann, lbl map[string]string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "AuthpipeBufferDataLoss" {
				ann, lbl = r.Annotations, r.Labels
			}
		}
	}
	require.NotNil(t, ann, "AuthpipeBufferDataLoss is shipped")
	expAnn := map[string]string{}
	for k, v := range ann {
		expAnn[k] = strings.ReplaceAll(v, "{{ $labels.tenant }}", w.env.Tenant)
	}
	expLabels := map[string]string{"job": "authpipe", "tenant": w.env.Tenant}
	for k, v := range lbl {
		expLabels[k] = v
	}
	test := map[string]any{
		"rule_files":          []string{rules},
		"evaluation_interval": "1m",
		"tests": []any{map[string]any{
			"interval": "1m",
			"input_series": []any{map[string]any{
				"series": fmt.Sprintf(`authpipe_buffer_data_loss_total{%s,job="authpipe",instance=%q}`, labels, w.env.Listen),
				"values": v0 + "x10 " + v1 + "x80",
			}},
			"alert_rule_test": []any{
				map[string]any{"eval_time": "10m", "alertname": "AuthpipeBufferDataLoss", "exp_alerts": []any{}},
				map[string]any{"eval_time": "12m", "alertname": "AuthpipeBufferDataLoss", "exp_alerts": []any{
					map[string]any{"exp_labels": expLabels, "exp_annotations": expAnn},
				}},
			},
		}},
	}
	out, err := yaml.Marshal(test)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "dataloss.test.yml")
	require.NoError(t, os.WriteFile(path, out, 0o644))
	res, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
	require.NoError(t, err, "promtool test rules:\n%s\n%s", res, out)
}

// TestE2EUnsafeRedis: a Redis that can lose the buffer is reported at start
// (ERROR line naming the setting, authpipe_buffer_unsafe_config), and with
// AUTHPIPE_REQUIRE_SAFE_REDIS=true refused (exit code 1, the setting named).
// A Redis that refuses CONFIG (managed Redis) is unknown, not refused.
func TestE2EUnsafeRedis(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, reason, setting string
		args                  []string
	}{
		{"no persistence", "no_persistence", "appendonly no and save", []string{"--appendonly", "no", "--save", ""}},
		{"eviction policy", "eviction_policy", "maxmemory-policy allkeys-lru", []string{"--maxmemory-policy", "allkeys-lru"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testredis.StartWith(t, tc.args...)
			w := newWorld(t, srv.Addr)
			p := w.start()
			w.waitReady(p)
			require.Eventually(t, func() bool {
				return w.metric(`authpipe_buffer_unsafe_config{reason="`+tc.reason+`"`) == 1
			}, 20*time.Second, 50*time.Millisecond)
			require.Equal(t, 1.0, w.metric("authpipe_buffer_unsafe_config"), "only this reason")
			lines := w.logLines(`"level":"ERROR"`, `"msg":"unsafe Redis setting: the buffer can lose data"`)
			require.Len(t, lines, 1)
			require.Contains(t, lines[0], tc.setting)
			p.Kill()

			mark := len(w.logLines())
			p = w.start(append(w.environ(), "AUTHPIPE_REQUIRE_SAFE_REDIS=true")...)
			select {
			case <-p.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("authpipe did not refuse to start")
			}
			var exit *exec.ExitError
			require.ErrorAs(t, p.Err(), &exit)
			require.Equal(t, 1, exit.ExitCode())
			out := strings.Join(w.logLines()[mark:], "\n")
			require.Contains(t, out, "refusing to start (AUTHPIPE_REQUIRE_SAFE_REDIS=true)")
			require.Contains(t, out, tc.setting)
			require.NotContains(t, out, "authpipe started")
		})
	}
	t.Run("managed redis refuses CONFIG", func(t *testing.T) {
		t.Parallel()
		srv := testredis.StartWith(t, "--rename-command", "CONFIG", "")
		w := newWorld(t, srv.Addr)
		w.extra = append(w.extra, "AUTHPIPE_REQUIRE_SAFE_REDIS=true")
		p := w.start()
		w.waitReady(p)
		require.Equal(t, 1.0, w.metric(`authpipe_buffer_redis_config_info{eviction_policy="unknown",persistence="aof"}`))
		require.Zero(t, w.metric("authpipe_buffer_unsafe_config"))
		require.Empty(t, w.logLines(`"level":"ERROR"`))
		require.Len(t, w.logLines(`"level":"WARN"`, "reported as unknown"), 1)
	})
}

// TestE2EEmbeddedBufferFileReplacedByOlderCopy: the embedded buffer's file
// is replaced by an older copy while authpipe is stopped, with events it
// had buffered and not yet delivered: they are polled again, the loss is
// counted once.
func TestE2EEmbeddedBufferFileReplacedByOlderCopy(t *testing.T) {
	t.Parallel()
	w := newWorld(t, "") // the embedded buffer
	dataDir := t.TempDir()
	w.extra = append(w.extra, "AUTHPIPE_DATA_DIR="+dataDir)
	file := filepath.Join(dataDir, "buffer-"+w.env.Tenant+".db")
	tenant := w.env.Tenant

	first := e2etest.AddEvents(w.auth0, 300)
	p := w.start()
	e2etest.WaitDelivered(t, w.segment, tenant, first, 60*time.Second)
	p.Stop(t, 15*time.Second)
	backup := file + ".backup"
	copyFile(t, file, backup)

	// A second run buffers more; Segment stops accepting half way, so
	// some are buffered and not delivered when it stops.
	w.segment.SetDelay(20 * time.Millisecond)
	second := e2etest.AddEvents(w.auth0, 1000)
	p = w.start()
	require.Eventually(t, func() bool { return w.delivered(second) > 100 }, 60*time.Second, 20*time.Millisecond)
	w.segment.SetStatus(http.StatusServiceUnavailable)
	require.Eventually(t, func() bool {
		return w.metric("authpipe_buffer_backlog_events") > 100 &&
			w.metric("authpipe_buffer_delivered_watermark_timestamp_seconds") > 0
	}, 60*time.Second, 50*time.Millisecond)
	require.Less(t, w.delivered(second), len(second))
	p.Stop(t, 15*time.Second)

	// Restored from the older copy while authpipe is stopped.
	copyFile(t, backup, file)
	w.segment.SetStatus(0)
	p = w.start()
	all := append(first, second...)
	e2etest.WaitDelivered(t, w.segment, tenant, all, 90*time.Second)
	e2etest.RequireExactlyOnceByMessageID(t, w.segment, tenant, all)
	require.Equal(t, 1.0, w.metric("authpipe_buffer_data_loss_total"))
	require.Equal(t, 1.0, w.metric(`authpipe_buffer_data_loss_found{tenant="`+tenant+`",what="buffer_file"`))
	lines := w.logLines(`"level":"ERROR"`, `"msg":"buffer lost data"`)
	require.Len(t, lines, 1)
	require.Contains(t, lines[0], "replaced by an older copy")
	require.Contains(t, lines[0], `"repoll_from_log_id":"900`)
	p.Stop(t, 15*time.Second)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	raw, err := os.ReadFile(src)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(dst, raw, 0o600))
}
