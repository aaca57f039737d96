package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/testlogs"
	"github.com/authpipe/authpipe/internal/testredis"
)

func entry(op string) audit.Entry {
	return audit.Entry{ID: audit.NewID(), Kind: audit.KindRequest, Part: 1, Parts: 1, Time: time.Now().UTC(),
		Auth: audit.AuthNone, Operation: op, Outcome: audit.OutcomeAllowed, Status: audit.IntPtr(200)}
}

// switchSink is a sink that fails while down is set, recording what it
// stored.
type switchSink struct {
	name string
	mu   sync.Mutex
	down bool
	got  []audit.Entry
}

func (s *switchSink) Name() string { return s.name }
func (s *switchSink) Append(_ context.Context, e audit.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("sink down")
	}
	e.Seq = uint64(len(s.got) + 1)
	s.got = append(s.got, e)
	return nil
}
func (s *switchSink) set(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }
func (s *switchSink) ops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.got {
		out = append(out, e.Operation+"/"+e.Kind)
	}
	return out
}

// TestTrailFailClosed: Record succeeds while one sink takes the entry;
// with every sink down it fails and keeps nothing; Defer keeps the entry
// for each sink that fails and writes it first when the sink is back.
func TestTrailFailClosed(t *testing.T) {
	a, b := &switchSink{name: "log"}, &switchSink{name: "redis"}
	reg := prometheus.NewPedanticRegistry()
	logs := &testlogs.Buffer{}
	tr, err := audit.NewTrail([]audit.Sink{a, b}, audit.Deps{Registerer: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err)
	ctx := t.Context()

	require.NoError(t, tr.Record(ctx, entry("one")))
	b.set(true)
	require.NoError(t, tr.Record(ctx, entry("two")), "one sink is enough")
	require.Equal(t, []string{"one/request", "two/request"}, a.ops())
	require.Equal(t, []string{"one/request"}, b.ops())
	require.EqualValues(t, 1, testutil.ToFloat64(pendingOf(t, reg, "redis")))

	a.set(true)
	err = tr.Record(ctx, entry("three"))
	require.ErrorIs(t, err, audit.ErrUnavailable)
	tr.Defer(ctx, entry("three-refused"))
	require.EqualValues(t, 2, testutil.ToFloat64(pendingOf(t, reg, "redis")), "two then three-refused, not three")
	require.EqualValues(t, 1, testutil.ToFloat64(pendingOf(t, reg, "log")))

	a.set(false)
	require.Equal(t, 2, tr.Flush(ctx), "redis still holds two")
	require.Equal(t, []string{"one/request", "two/request", "three-refused/request"}, a.ops())
	b.set(false)
	require.NoError(t, tr.Record(ctx, entry("four")))
	require.Equal(t, []string{"one/request", "two/request", "three-refused/request", "four/request"}, b.ops(), "kept entries first, in order")
	require.Zero(t, tr.Flush(ctx))

	require.Contains(t, logs.String(), "write audit entry")
	require.Contains(t, logs.String(), "write audit entry: recovered")
	require.Equal(t, 1, strings.Count(logs.String(), `"sink":"redis","err"`), "one error line per outage, the rest counted")
	require.Subset(t, []string{"audit"}, testlogs.Components(logs.String()), "every line names the audit component")
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP authpipe_admin_audit_dropped_total Audit entries a failing sink could no longer keep for a later write (more than 10000 waiting): lost from that sink's trail, which records a gap entry in their place.
# TYPE authpipe_admin_audit_dropped_total counter
authpipe_admin_audit_dropped_total{sink="log"} 0
authpipe_admin_audit_dropped_total{sink="redis"} 0
`), "authpipe_admin_audit_dropped_total"))
	require.Greater(t, testutil.ToFloat64(errorsOf(t, reg, "redis")), 2.0)
}

// TestTrailGap: a sink down for longer than its queue holds records a gap
// entry with the number lost, then the entries it kept.
func TestTrailGap(t *testing.T) {
	a, b := &switchSink{name: "log"}, &switchSink{name: "redis", down: true}
	reg := prometheus.NewPedanticRegistry()
	tr, err := audit.NewTrail([]audit.Sink{a, b}, audit.Deps{Registerer: reg})
	require.NoError(t, err)
	for i := range audit.MaxPending + 5 {
		require.NoError(t, tr.Record(t.Context(), entry(fmt.Sprint(i))))
	}
	b.set(false)
	require.Zero(t, tr.Flush(t.Context()))
	ops := b.ops()
	require.Len(t, ops, audit.MaxPending+1)
	require.Equal(t, "audit/gap", ops[0])
	require.EqualValues(t, 5, *b.got[0].Affected)
	require.Equal(t, "5/request", ops[1], "the oldest five were dropped")
	require.EqualValues(t, 5, testutil.ToFloat64(droppedOf(t, reg, "redis")))
}

func TestSplit(t *testing.T) {
	e := entry("dlq_drop")
	for i := range 600 {
		e.Records = append(e.Records, audit.Record{ID: fmt.Sprintf("1-%d", i), LogID: fmt.Sprint(i)})
	}
	e.Missing = []string{"9-9"}
	parts := audit.Split(e)
	require.Len(t, parts, 3)
	var ids []string
	for i, p := range parts {
		require.Equal(t, i+1, p.Part)
		require.Equal(t, 3, p.Parts)
		require.Equal(t, e.ID, p.ID)
		for _, r := range p.Records {
			ids = append(ids, r.ID)
		}
	}
	require.Len(t, ids, 600, "nothing cut")
	require.Equal(t, "1-599", ids[599])
	require.Equal(t, []string{"9-9"}, parts[0].Missing)
	require.Nil(t, parts[1].Missing)
	require.Len(t, audit.Split(entry("x")), 1)
}

func TestMasker(t *testing.T) {
	token := strings.Repeat("ab12", 16) // 64 characters: openssl rand -hex 32
	m := audit.NewMasker([]string{"short-secret", "s3cr3t-client-secret"}, []string{"a-tenant-name-of-thirty-two-char"})
	tests := []struct{ in, want string }{
		{"/api/v1/dlq", "/api/v1/dlq"},
		{"/api/v1/" + token, "/api/v1/" + audit.Masked},
		{"/api/v1/" + token[:32], "/api/v1/" + audit.Masked},
		{"/api/v1/" + token[:31], "/api/v1/" + token[:31]},
		{"/x/short-secret", "/x/" + audit.Masked},
		{"/x/a-s3cr3t-client-secret-b", "/x/" + audit.Masked},
		{"/x/a-tenant-name-of-thirty-two-char", "/x/a-tenant-name-of-thirty-two-char"},
		{"/x/17641111111110000000-18446744073709551615", "/x/17641111111110000000-18446744073709551615"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, m.Path(tt.in), tt.in)
	}
	q := m.Query("tenant=" + token + "&limit=2&" + token + "=x&after=%zz")
	require.Equal(t, map[string][]string{"tenant": {audit.Masked}, "limit": {"2"}, audit.Masked: {"x"}, "": {"after=%zz"}}, q)
	require.Equal(t, "https://<credentials>@auth.example.com/.well-known/jwks.json",
		audit.RedactURL("https://admin:hunter2-password@auth.example.com/.well-known/jwks.json?key=v"))
}

func pendingOf(t *testing.T, reg *prometheus.Registry, sink string) prometheus.Collector {
	return series(t, reg, "authpipe_admin_audit_pending_entries", sink)
}
func errorsOf(t *testing.T, reg *prometheus.Registry, sink string) prometheus.Collector {
	return series(t, reg, "authpipe_admin_audit_errors_total", sink)
}
func droppedOf(t *testing.T, reg *prometheus.Registry, sink string) prometheus.Collector {
	return series(t, reg, "authpipe_admin_audit_dropped_total", sink)
}

// series is one series of the registry as a collector, for ToFloat64.
func series(t *testing.T, reg *prometheus.Registry, name, sink string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == sink {
				v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
				return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return v })
			}
		}
	}
	t.Fatalf("no series %s{sink=%q}", name, sink)
	return nil
}

// lines reads a file's lines.
func lines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func writeLines(t *testing.T, path string, ls []string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(ls, "\n")+"\n"), 0o600))
}

// TestFileChain: two writers (two processes' sinks) append to one file on
// one chain; verify passes; a deleted or edited line is named by the line
// after it.
func TestFileChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w1, err := audit.NewFileSink(path)
	require.NoError(t, err)
	w2, err := audit.NewFileSink(path)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := w1
			if i%2 == 1 {
				w = w2
			}
			require.NoError(t, w.Append(t.Context(), entry(fmt.Sprint(i))))
		}()
	}
	wg.Wait()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	rep, err := audit.VerifyFile(path)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 20, rep.Entries)
	require.True(t, rep.Genesis)
	require.Contains(t, rep.String(), "ok: 20 entries, seq 1 to 20 (from the chain's first entry)")

	orig := lines(t, path)
	tests := []struct {
		name string
		edit func([]string) []string
		want string
	}{
		{"deleted", func(l []string) []string { return append(append([]string{}, l[:7]...), l[8:]...) },
			"BROKEN at line 8 (seq 9): 1 entry missing before it (seq 8), after line 7: deleted"},
		{"two deleted", func(l []string) []string { return append(append([]string{}, l[:7]...), l[9:]...) },
			"BROKEN at line 8 (seq 10): 2 entries missing before it (seq 8 to 9), after line 7: deleted"},
		{"edited", func(l []string) []string {
			c := append([]string{}, l...)
			c[7] = strings.Replace(c[7], `"outcome":"allowed"`, `"outcome":"denied"`, 1)
			return c
		}, "BROKEN at line 9 (seq 9): its prev does not match the hash of the entry before it (line 8, seq 8): that entry was edited"},
		{"edited beyond JSON", func(l []string) []string {
			c := append([]string{}, l...)
			c[3] = "garbage"
			return c
		}, "BROKEN at line 4: not an audit entry"},
		{"reordered", func(l []string) []string {
			c := append([]string{}, l...)
			c[4], c[5] = c[5], c[4]
			return c
		}, "BROKEN at line 5 (seq 6): 1 entry missing before it (seq 5)"},
		{"head trimmed (rotation)", func(l []string) []string { return l[5:] }, "ok: 15 entries, seq 6 to 20 (the head before seq 6 was trimmed)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "edited.jsonl")
			writeLines(t, p, tt.edit(orig))
			rep, err := audit.VerifyFile(p)
			require.NoError(t, err)
			require.Contains(t, rep.String(), tt.want)
		})
	}

	// A new writer continues the chain from the file's last line.
	w3, err := audit.NewFileSink(path)
	require.NoError(t, err)
	require.NoError(t, w3.Append(t.Context(), entry("later")))
	rep, err = audit.VerifyFile(path)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 21, rep.Entries)

	// A file ending in part of a line refuses further writes, loudly.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"seq":22,"pr`)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.ErrorContains(t, w3.Append(t.Context(), entry("after a torn line")), "ends in part of a line")
	_, err = audit.NewFileSink(path)
	require.ErrorContains(t, err, "ends in part of a line")
}

// TestFileSinkFull: a device that takes nothing fails the append.
func TestFileSinkFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Fatalf("/dev/full: %v", err)
	}
	s, err := audit.NewFileSink("/dev/full")
	require.NoError(t, err)
	require.ErrorContains(t, s.Append(t.Context(), entry("x")), "write audit log")
}

func TestWriterSinkChain(t *testing.T) {
	var buf bytes.Buffer
	s := audit.NewWriterSink(&buf)
	for i := range 3 {
		require.NoError(t, s.Append(t.Context(), entry(fmt.Sprint(i))))
	}
	rep, err := audit.VerifyLines(&buf, "stdout")
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 3, rep.Entries)
}

// redisWorld is a Redis audit trail under keys of its own.
func redisWorld(t testing.TB) (*redis.Client, audit.Keys) {
	return testredis.Client(t), audit.KeysFor("audit-" + testredis.Name(t))
}

// TestRedisChainConcurrentWriters: three writers (replicas) append
// concurrently to one stream; the stream is one chain; verify passes.
func TestRedisChainConcurrentWriters(t *testing.T) {
	rdb, keys := redisWorld(t)
	var wg sync.WaitGroup
	for w := range 3 {
		s := audit.NewRedisSink(rdb, keys, time.Hour, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				require.NoError(t, s.Append(context.Background(), entry(fmt.Sprintf("w%d-%d", w, i))))
			}
		}()
	}
	wg.Wait()
	rep, err := audit.VerifyRedis(t.Context(), rdb, keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 90, rep.Entries)
	require.True(t, rep.Genesis)
	var tail []string
	require.NoError(t, audit.TailRedis(t.Context(), rdb, keys, 2, false, func(l []byte) { tail = append(tail, string(l)) }))
	require.Len(t, tail, 2)
	require.Contains(t, tail[1], `"seq":90,`)
}

// TestRedisTamper: a deleted entry (head, middle, tail) or an edited one
// is named; a head trimmed by retention is accepted.
func TestRedisTamper(t *testing.T) {
	ctx := t.Context()
	build := func(t *testing.T) (*redis.Client, audit.Keys, []redis.XMessage) {
		rdb, keys := redisWorld(t)
		s := audit.NewRedisSink(rdb, keys, time.Hour, nil)
		for i := range 10 {
			require.NoError(t, s.Append(ctx, entry(fmt.Sprint(i))))
		}
		msgs, err := rdb.XRange(ctx, keys.Stream, "-", "+").Result()
		require.NoError(t, err)
		require.Len(t, msgs, 10)
		return rdb, keys, msgs
	}
	verify := func(t *testing.T, rdb *redis.Client, keys audit.Keys) string {
		rep, err := audit.VerifyRedis(ctx, rdb, keys)
		require.NoError(t, err)
		return rep.String()
	}
	t.Run("middle deleted", func(t *testing.T) {
		rdb, keys, msgs := build(t)
		require.NoError(t, rdb.XDel(ctx, keys.Stream, msgs[4].ID).Err())
		require.Contains(t, verify(t, rdb, keys), "BROKEN at stream id "+msgs[5].ID+" (seq 6): 1 entry missing before it (seq 5), after stream id "+msgs[3].ID+": deleted")
	})
	t.Run("edited", func(t *testing.T) {
		rdb, keys, msgs := build(t)
		// Streams cannot be edited in place: rebuild it with one entry changed.
		require.NoError(t, rdb.Del(ctx, keys.Stream).Err())
		for i, m := range msgs {
			line := m.Values["entry"].(string)
			if i == 3 {
				line = strings.Replace(line, `"outcome":"allowed"`, `"outcome":"denied"`, 1)
			}
			require.NoError(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream, ID: m.ID, Values: []any{"entry", line}}).Err())
		}
		require.Contains(t, verify(t, rdb, keys), "BROKEN at stream id "+msgs[4].ID+" (seq 5): its prev does not match the hash of the entry before it (stream id "+msgs[3].ID+", seq 4): that entry was edited")
	})
	t.Run("head deleted", func(t *testing.T) {
		rdb, keys, msgs := build(t)
		require.NoError(t, rdb.XDel(ctx, keys.Stream, msgs[0].ID, msgs[1].ID).Err())
		require.Contains(t, verify(t, rdb, keys), "BROKEN at stream id "+msgs[2].ID+" (seq 3): the chain starts at id "+msgs[0].ID+" (seq 1")
		// A later append does not paper over it.
		require.NoError(t, audit.NewRedisSink(rdb, keys, time.Hour, nil).Append(ctx, entry("later")))
		require.Contains(t, verify(t, rdb, keys), "BROKEN at stream id "+msgs[2].ID)
	})
	t.Run("tail deleted", func(t *testing.T) {
		rdb, keys, msgs := build(t)
		require.NoError(t, rdb.XDel(ctx, keys.Stream, msgs[9].ID).Err())
		require.Contains(t, verify(t, rdb, keys), "BROKEN at stream id "+msgs[8].ID+" (seq 9): the chain's last entry is seq 10")
	})
	t.Run("stream deleted", func(t *testing.T) {
		rdb, keys, _ := build(t)
		require.NoError(t, rdb.Del(ctx, keys.Stream).Err())
		require.Contains(t, verify(t, rdb, keys), "the stream is empty but the chain recorded entries up to seq 10")
		// Writing on starts no fresh chain that hides it.
		require.NoError(t, audit.NewRedisSink(rdb, keys, time.Hour, nil).Append(ctx, entry("later")))
		require.Contains(t, verify(t, rdb, keys), "BROKEN")
	})
	t.Run("intact", func(t *testing.T) {
		rdb, keys, _ := build(t)
		require.Contains(t, verify(t, rdb, keys), "ok: 10 entries, seq 1 to 10 (from the chain's first entry)")
	})
}

// TestRedisRetention: trimming by age moves the recorded chain start; the
// trimmed stream verifies, as does one trimmed again later.
func TestRedisRetention(t *testing.T) {
	ctx := t.Context()
	rdb, keys := redisWorld(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	s := audit.NewRedisSink(rdb, keys, time.Hour, clock)
	for range 3 {
		require.NoError(t, s.Append(ctx, entry("old")))
	}
	clock.Advance(90 * time.Minute)
	require.NoError(t, s.Append(ctx, entry("new")))
	n, err := rdb.XLen(ctx, keys.Stream).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the three old entries are past the retention")
	rep, err := audit.VerifyRedis(ctx, rdb, keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, "ok: 1 entries, seq 4 to 4 (the head before seq 4 was trimmed)", strings.TrimPrefix(rep.String(), keys.Stream+": "))

	// A clock behind the stream still appends.
	clock.Advance(-3 * time.Hour)
	require.NoError(t, s.Append(ctx, entry("behind")))
	rep, err = audit.VerifyRedis(ctx, rdb, keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 2, rep.Entries)
}

// TestRedisWrongType: a key that is not a stream fails the append (and
// the next writer chains on once it is a stream again).
func TestRedisWrongType(t *testing.T) {
	ctx := t.Context()
	rdb, keys := redisWorld(t)
	s := audit.NewRedisSink(rdb, keys, time.Hour, nil)
	require.NoError(t, s.Append(ctx, entry("one")))
	require.NoError(t, rdb.Set(ctx, keys.Stream, "not a stream", 0).Err())
	require.ErrorContains(t, s.Append(ctx, entry("two")), "WRONGTYPE")
}

// TestRedisCluster: the stream and its chain record share a hash slot, so
// appends, trims and verification work on Redis Cluster.
func TestRedisCluster(t *testing.T) {
	c := testredis.StartCluster(t)
	rdb := c.Client(t)
	keys := audit.DefaultKeys
	for w := range 2 {
		s := audit.NewRedisSink(rdb, keys, time.Hour, nil)
		for i := range 5 {
			require.NoError(t, s.Append(t.Context(), entry(fmt.Sprintf("w%d-%d", w, i))))
		}
	}
	rep, err := audit.VerifyRedis(t.Context(), rdb, keys)
	require.NoError(t, err)
	require.True(t, rep.OK(), rep.String())
	require.Equal(t, 10, rep.Entries)
}
