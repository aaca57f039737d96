package buffer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/testredis"
)

// Both backends serve the poller and the forwarder.
var (
	_ auth0poll.Buffer = (*buffer.Bolt)(nil)
	_ forward.Buffer   = (*buffer.Bolt)(nil)
	_ Backend          = (*buffer.Bolt)(nil)
	_ Backend          = redisBackend{}
)

// redisBackend gives the Redis backend the Close the suite expects: the
// client belongs to the test, so closing the buffer does nothing.
type redisBackend struct{ *buffer.Redis }

func (redisBackend) Close() error { return nil }

// redisClient is a client of the shared test server configured as
// authpipe run configures its own: contexts bound blocking commands.
func redisClient(t *testing.T) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: testredis.Addr(t), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// redisOpener opens buffers of one fresh tenant on the shared test server.
func redisOpener(t *testing.T) Opener {
	return redisOpenerOn(t, redisClient(t))
}

// redisOpenerOn opens buffers of one fresh tenant through rdb.
func redisOpenerOn(t *testing.T, rdb redis.UniversalClient) Opener {
	tenant := testredis.Name(t)
	return func(cfg buffer.Config, deps buffer.Deps) (Backend, error) {
		if cfg.Tenant == "" {
			cfg.Tenant = tenant
		}
		b, err := buffer.NewRedis(rdb, cfg, TenantDeps(cfg, deps))
		if err != nil {
			return nil, err
		}
		return redisBackend{b}, nil
	}
}

// boltOpener opens buffers in one fresh data dir.
func boltOpener(t *testing.T) Opener {
	dir := t.TempDir()
	return func(cfg buffer.Config, deps buffer.Deps) (Backend, error) {
		if cfg.Tenant == "" {
			cfg.Tenant = "acme"
		}
		b, err := buffer.OpenBolt(dir, cfg, TenantDeps(cfg, deps))
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}

func TestConformance(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		Run(t, redisOpener, Options{WallClockIdle: true})
	})
	t.Run("bolt", func(t *testing.T) {
		t.Parallel()
		Run(t, boltOpener, Options{})
	})
}

// The process killed mid-write: TestKilledMidWrite runs this test binary
// again as a child (TestHelperProcess, switched on by envHelper) that
// appends pages in a loop while a consumer reads and acknowledges, and kills
// it with SIGKILL at a random moment.
const (
	envHelper     = "AUTHPIPE_BUFFER_HELPER"        // backend: bolt | redis
	envTarget     = "AUTHPIPE_BUFFER_HELPER_TARGET" // data dir (bolt) or tenant (redis)
	killPageSize  = 20
	killTenant    = "acme"
	helperTimeout = 30 * time.Second
)

// killPage is page i of the child's log stream: killPageSize logs of about
// 1 KB each, so that one page spans several database pages.
func killPage(i int) []auth0log.Log {
	at := Base.Add(time.Duration(i) * time.Second)
	logs := Page(at, 0, killPageSize)
	for j := range logs {
		raw, _ := json.Marshal(map[string]any{
			"log_id": logs[j].ID, "date": at.Format(time.RFC3339), "type": "s",
			"details": strings.Repeat(strconv.Itoa(i%10), 1000),
		})
		logs[j].Raw = raw
	}
	return logs
}

func openKillTarget(t *testing.T, kind, target string) Backend {
	t.Helper()
	var (
		b   Backend
		err error
	)
	switch kind {
	case "bolt":
		b, err = buffer.OpenBolt(target, buffer.Config{Tenant: killTenant}, buffer.Deps{})
	case "redis":
		var r *buffer.Redis
		r, err = buffer.NewRedis(redisClient(t), buffer.Config{Tenant: target}, buffer.Deps{})
		b = redisBackend{r}
	default:
		t.Fatalf("unknown backend %q", kind)
	}
	require.NoError(t, err)
	return b
}

// TestHelperProcess is the child of TestKilledMidWrite; it does nothing in
// a normal run. It prints "page N" after page N was appended, "acking IDS"
// before and "acked IDS" after each acknowledgement.
func TestHelperProcess(t *testing.T) {
	kind := os.Getenv(envHelper)
	if kind == "" {
		t.Skip("child process of TestKilledMidWrite")
	}
	b := openKillTarget(t, kind, os.Getenv(envTarget))
	ctx := context.Background()
	if err := b.EnsureGroup(ctx, "fwd"); err != nil {
		fmt.Fprintln(os.Stderr, "ensure group:", err)
		os.Exit(2)
	}
	go func() {
		for {
			es, err := b.Read(ctx, "fwd", "c", 7, 20*time.Millisecond)
			if err != nil {
				fmt.Fprintln(os.Stderr, "read:", err)
				os.Exit(2)
			}
			var ids []string
			for i, e := range es {
				if i%2 == 0 { // the rest stays pending
					ids = append(ids, e.ID)
				}
			}
			if len(ids) == 0 {
				continue
			}
			line := strings.Join(ids, " ")
			fmt.Printf("acking %s\n", line)
			if err := b.Ack(ctx, "fwd", ids...); err != nil {
				fmt.Fprintln(os.Stderr, "ack:", err)
				os.Exit(2)
			}
			fmt.Printf("acked %s\n", line)
		}
	}()
	deadline := time.Now().Add(helperTimeout)
	for i := 0; time.Now().Before(deadline); i++ {
		p := killPage(i)
		if _, err := b.Append(ctx, p, p[len(p)-1].ID); err != nil {
			fmt.Fprintln(os.Stderr, "append:", err)
			os.Exit(2)
		}
		fmt.Printf("page %d\n", i)
	}
	os.Exit(0)
}

// childLog is what the child reported before it died.
type childLog struct {
	mu       sync.Mutex
	pages    int // pages reported appended
	acks     int
	acked    map[string]bool
	inFlight map[string]bool // acknowledgement started, not reported done
}

func (c *childLog) line(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	verb, rest, _ := strings.Cut(s, " ")
	switch verb {
	case "page":
		n, _ := strconv.Atoi(rest)
		c.pages = n + 1
	case "acking":
		for _, id := range strings.Fields(rest) {
			c.inFlight[id] = true
		}
	case "acked":
		c.acks++
		for _, id := range strings.Fields(rest) {
			delete(c.inFlight, id)
			c.acked[id] = true
		}
	}
}

func (c *childLog) progress() (pages, acks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pages, c.acks
}

// TestKilledMidWrite: a process appending pages (and acknowledging
// entries) is killed with SIGKILL at a random moment. Reopened, the buffer
// holds whole pages only, each once, in order; the checkpoint is the last
// log of the stream; every entry is acknowledged, pending or undelivered,
// never both acknowledged and back; and appending carries on.
func TestKilledMidWrite(t *testing.T) {
	for _, kind := range []string{"bolt", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			target := t.TempDir()
			env := append(os.Environ(), envHelper+"="+kind)
			if kind == "redis" {
				target = testredis.Name(t)
				env = append(env, testredis.EnvAddr+"="+testredis.Addr(t))
			}
			env = append(env, envTarget+"="+target)

			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = env
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			killed := false
			t.Cleanup(func() {
				if !killed {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
			})
			child := &childLog{acked: map[string]bool{}, inFlight: map[string]bool{}}
			readDone := make(chan struct{})
			go func() {
				defer close(readDone)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					child.line(sc.Text())
				}
			}()

			// Let it get going, then kill it at a random moment.
			require.Eventually(t, func() bool {
				pages, acks := child.progress()
				return pages >= 10 && acks >= 3
			}, 20*time.Second, 5*time.Millisecond, "child made no progress: %s", &stderr)
			if kind == "bolt" {
				// A second process cannot open the data dir meanwhile.
				_, err := buffer.OpenBolt(target, buffer.Config{Tenant: killTenant}, buffer.Deps{})
				require.ErrorContains(t, err, "data dir "+target+" is in use by another authpipe")
			}
			time.Sleep(time.Duration(rand.N(100)) * time.Millisecond)
			require.NoError(t, cmd.Process.Kill())
			killed = true
			require.Error(t, cmd.Wait(), "child was killed, not done")
			<-readDone
			require.Empty(t, stderr.String())

			b := openKillTarget(t, kind, target)
			t.Cleanup(func() { _ = b.Close() })
			ctx := t.Context()
			cp, err := b.Checkpoint(ctx)
			require.NoError(t, err)
			st, err := b.Stats(ctx, "fwd")
			require.NoError(t, err)

			// Whole pages, in order, each once; the checkpoint follows the last.
			stored := ReadAll(t, b, "audit", "a")
			require.NotEmpty(t, stored)
			require.Zero(t, len(stored)%killPageSize, "partial page: %d entries", len(stored))
			pages := len(stored) / killPageSize
			for i, e := range stored {
				want := killPage(i / killPageSize)[i%killPageSize]
				require.Equal(t, want.ID, e.LogID, "entry %d", i)
				require.JSONEq(t, string(want.Raw), string(e.Raw), "entry %d", i)
			}
			require.Equal(t, stored[len(stored)-1].LogID, cp)
			reported, _ := child.progress()
			require.GreaterOrEqual(t, pages, reported, "a page reported appended is stored")
			require.LessOrEqual(t, pages, reported+1, "at most the page in flight is stored besides")

			// Consumer state: acknowledged entries never come back; every
			// other entry is pending (with the same consumer) or undelivered.
			pending := ReadAllPending(t, b, "fwd", "c", 100)
			undelivered := ReadAll(t, b, "fwd", "c")
			back := map[string]bool{}
			for _, e := range append(append([]buffer.Entry{}, pending...), undelivered...) {
				require.False(t, back[e.ID], "entry %s delivered twice after reopen", e.ID)
				back[e.ID] = true
				require.False(t, child.acked[e.ID], "acknowledged entry %s came back", e.ID)
			}
			for _, e := range stored {
				require.True(t, child.acked[e.ID] || child.inFlight[e.ID] || back[e.ID], "entry %s lost", e.ID)
			}
			require.GreaterOrEqual(t, st.Backlog, int64(len(stored)-len(child.acked)-len(child.inFlight)))
			require.LessOrEqual(t, st.Backlog, int64(len(stored)-len(child.acked)))
			t.Logf("%d pages stored, %d entries acknowledged, %d pending, %d undelivered",
				pages, len(child.acked), len(pending), len(undelivered))

			// Appending carries on where the stream stopped.
			last := killPage(pages - 1)
			added, err := b.Append(ctx, last, last[len(last)-1].ID)
			require.NoError(t, err)
			require.Zero(t, added, "the last page again is a duplicate")
			var next []auth0log.Log
			for i := pages; i < pages+2; i++ {
				p := killPage(i)
				added, err := b.Append(ctx, p, p[len(p)-1].ID)
				require.NoError(t, err)
				require.Equal(t, killPageSize, added)
				next = append(next, p...)
			}
			cp, err = b.Checkpoint(ctx)
			require.NoError(t, err)
			require.Equal(t, next[len(next)-1].ID, cp)
			more := ReadAll(t, b, "audit", "a")
			require.Equal(t, LogIDs(next), EntryLogIDs(more))
		})
	}
}
