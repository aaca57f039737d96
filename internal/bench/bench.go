// Package bench is authpipe's end-to-end benchmark (`make bench`): the Auth0
// simulator without rate limit → `authpipe run` as a subprocess with a real
// redis-server (or the embedded buffer) → the Segment simulator.
//
// For each buffer backend it measures:
//
//   - catch-up: Options.Events events are waiting in the simulator when
//     authpipe starts; the end-to-end rate is events / (time from process
//     start until Segment accepted the last one). The worker's peak RSS
//     (VmHWM) and CPU time (utime+stime) come from /proc of the subprocess,
//     so the simulators in this process (~750 MB per million events) do not
//     count; Segment requests and batch sizes come from the Segment
//     simulator.
//   - steady state: events are added at Options.Rate per second for
//     Options.SteadyFor; each event's latency runs from the moment it became
//     available in the simulator (Add returned) to the moment the Segment
//     simulator first accepted its messageId.
//   - stages alone, in this process with the real packages: the poller
//     against a buffer that only counts, the buffer's Append and
//     Read+Ack, and the forwarder over a pre-filled buffer.
//
// With Redis, the Log Streams receiver (Push): the logs per second it
// answers 200 for (committed to the buffer), pushed back to back by four
// pushers in requests of 100, and each pushed log's latency from the start
// of its push request to the Segment simulator at Options.PushRate.
//
// And, on the same Redis in the same run, Redis' own ceiling for the
// buffer's write pattern: pipelined XADD (100 per round trip, one page) of
// the same payloads from one connection.
//
// The simulators, Redis and authpipe share the machine's cores: every rate
// is what authpipe reaches while they run beside it.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/sim"
)

const (
	benchClientID     = "bench-client"
	benchClientSecret = "bench-client-secret"
	benchWriteKey     = "bench-write-key"
	// addChunk bounds how many generated events exist at once while the
	// simulator is filled.
	addChunk = 20_000
)

// Options configure a benchmark run. Zero fields take the defaults.
type Options struct {
	Authpipe     string        // the authpipe binary (required)
	Events       int           // catch-up events; default 1,000,000
	Rate         int           // steady-state events per second; default 5,000
	SteadyFor    time.Duration // steady-state duration; default 30s
	PollInterval time.Duration // AUTH0_POLL_INTERVAL of the worker; default 1s
	StageEvents  int           // events of each stage-alone measurement; default min(Events, 200,000); <0 skips them
	Backends     []string      // "redis", "bolt"; default both
	RedisServer  string        // redis-server binary; default from PATH
	RulesPath    string        // AUTHPIPE_RULES; default alerts/thresholds.yml of the module
	ExtraEnv     []string      // more environment for the worker (tuning knobs)
	Timeout      time.Duration // bound on each phase; default 10m
	ProfileDir   string        // if set, a 20 s CPU profile of each worker's catch-up is written here
	PushEvents   int           // logs pushed to the Log Streams receiver for its accepted rate (redis only); default 200,000; <0 skips the push runs
	PushRate     int           // logs per second pushed for the push → Segment latency; default 1,000
	PushFor      time.Duration // duration of that latency run; default 30s
	Log          io.Writer     // progress; default discard
}

func (o Options) withDefaults() (Options, error) {
	if o.Authpipe == "" {
		return o, errors.New("bench: the authpipe binary is required")
	}
	o.Events = cmp.Or(o.Events, 1_000_000)
	o.Rate = cmp.Or(o.Rate, 5000)
	o.SteadyFor = cmp.Or(o.SteadyFor, 30*time.Second)
	o.PollInterval = cmp.Or(o.PollInterval, time.Second)
	o.PushEvents = cmp.Or(o.PushEvents, 200_000)
	o.PushRate = cmp.Or(o.PushRate, 1000)
	o.PushFor = cmp.Or(o.PushFor, 30*time.Second)
	o.StageEvents = cmp.Or(o.StageEvents, min(o.Events, 200_000))
	if len(o.Backends) == 0 {
		o.Backends = []string{"redis", "bolt"}
	}
	for _, b := range o.Backends {
		if b != "redis" && b != "bolt" {
			return o, fmt.Errorf("bench: unknown backend %q (want redis or bolt)", b)
		}
	}
	o.Timeout = cmp.Or(o.Timeout, 10*time.Minute)
	o.Log = cmp.Or(o.Log, io.Discard)
	if o.RulesPath == "" {
		root, err := moduleRoot()
		if err != nil {
			return o, err
		}
		o.RulesPath = filepath.Join(root, "alerts", "thresholds.yml")
	}
	if abs, err := filepath.Abs(o.Authpipe); err == nil {
		o.Authpipe = abs
	}
	return o, nil
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bench: go.mod not found above the working directory; set the rules path")
		}
		dir = parent
	}
}

// Report holds every figure of a run.
type Report struct {
	Options  Options
	Machine  Machine
	Ceiling  Ceiling
	Backends []BackendReport
	Stages   []StageResult
	// Push is the Log Streams receiver's figures (Redis); nil when not run.
	Push *Push
	// SimPeakRSS is the bench process's own peak RSS (simulators).
	SimPeakRSS int64
	Took       time.Duration
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int
	CPUModel  string
	MemTotal  int64
	GoVersion string
	Redis     string
}

// Ceiling is Redis' own rate for the buffer's write pattern.
type Ceiling struct {
	Events   int
	Elapsed  time.Duration
	Pipeline int           // commands per round trip
	RedisCPU time.Duration // redis-server CPU while writing them
}

func (c Ceiling) Rate() float64 { return rate(c.Events, c.Elapsed) }

// BackendReport is one buffer backend's figures.
type BackendReport struct {
	Backend string
	CatchUp CatchUp
	Steady  Steady
}

// CatchUp is the run that starts with every event waiting in the simulator.
type CatchUp struct {
	Events      int
	Elapsed     time.Duration // process start → Segment accepted the last event
	PolledIn    time.Duration // process start → the poller had buffered every event
	FirstIn     time.Duration // process start → Segment accepted the first event
	CPU         time.Duration // worker utime+stime at the end
	PeakRSS     int64         // worker VmHWM
	PeakAnon    int64         // largest RssAnon sampled
	PeakFile    int64         // largest RssFile sampled (the bbolt mmap)
	Requests    int           // Segment requests
	Batches     []int         // messages per accepted batch (first copies)
	BatchSize   int           // configured Segment batch size
	Duplicates  int
	RedisCPU    time.Duration // redis-server CPU during the run (redis backend)
	PeakBacklog int           // largest authpipe_buffer_backlog_events sampled (every 250 ms)
	SimCPU      time.Duration // this process's CPU during the run: the simulators (and the progress polling)
	// After the catch-up, once trimming has run (the stream holds no
	// entry, or TrimWait passed): how long that took, what is left, and
	// what it costs.
	TrimmedIn     time.Duration // Segment accepted the last event → stream empty
	StreamLeft    int           // authpipe_buffer_stream_events then
	DedupeEntries int           // authpipe_buffer_dedupe_entries then
	RedisBaseline int64         // Redis used_memory before the worker started (redis backend)
	RedisUsed     int64         // Redis used_memory then (redis backend)
	FileSize      int64         // the embedded buffer's file size then, once compacted (bolt backend)
	FilePeak      int64         // its largest size sampled (every 250 ms) until then
	Compactions   int           // authpipe_buffer_compactions_total then
}

// BytesPerEvent is what the catch-up left behind per delivered event, once
// trimmed: Redis' used_memory growth, or the embedded buffer's file size.
func (c CatchUp) BytesPerEvent(backend string) float64 {
	if c.Events == 0 {
		return 0
	}
	if backend == "bolt" {
		return float64(c.FileSize) / float64(c.Events)
	}
	return float64(c.RedisUsed-c.RedisBaseline) / float64(c.Events)
}

func (c CatchUp) Rate() float64 { return rate(c.Events, c.Elapsed) }

// Steady is the run at a steady rate.
type Steady struct {
	Rate         int
	Events       int
	Duration     time.Duration
	Latencies    []time.Duration // sorted
	Missing      int             // events not accepted before the deadline
	CPU          time.Duration   // worker CPU during the steady phase
	PeakRSS      int64
	Requests     int
	PollInterval time.Duration
}

func (s Steady) Percentile(p float64) time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(s.Latencies)-1) * p)
	return s.Latencies[i]
}

// StageResult is one stage measured alone.
type StageResult struct {
	Name    string
	Backend string // "" when not buffer-specific
	Events  int
	Elapsed time.Duration
	Note    string
}

func (s StageResult) Rate() float64 { return rate(s.Events, s.Elapsed) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Run runs the whole benchmark.
func Run(ctx context.Context, opts Options) (*Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	began := time.Now()
	rep := &Report{Options: opts, Machine: machine()}
	logf := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "[%6.1fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, args...)...)
	}

	tmp, err := os.MkdirTemp("", "authpipe-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	needRedis := slices.Contains(opts.Backends, "redis")
	var rs *redisServer
	var rdb *redis.Client
	if needRedis {
		if err := os.MkdirAll(filepath.Join(tmp, "redis"), 0o700); err != nil {
			return nil, err
		}
		rs, err = startRedis(ctx, opts.RedisServer, filepath.Join(tmp, "redis"))
		if err != nil {
			return nil, err
		}
		defer rs.Stop()
		rdb = redis.NewClient(&redis.Options{Addr: rs.Addr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		if info, err := rdb.InfoMap(ctx, "server").Result(); err == nil {
			rep.Machine.Redis = info["Server"]["redis_version"]
		}
		logf("redis-server %s on %s (appendonly yes, appendfsync everysec)", rep.Machine.Redis, rs.Addr)
	}

	// The catch-up simulator: every event waiting before authpipe starts.
	logf("generating %d events in the Auth0 simulator", opts.Events)
	auth0 := sim.NewAuth0(sim.Auth0Options{ClientID: benchClientID, ClientSecret: benchClientSecret})
	fill(auth0, opts.Events, time.Now().Add(-2*time.Hour), 90*time.Minute)
	auth0Srv := httptest.NewServer(auth0)
	defer auth0Srv.Close()

	for _, backend := range opts.Backends {
		if needRedis {
			// Redis' own background work (an AOF rewrite started by the
			// previous run) must not overlap the next measurement.
			waitRedisIdle(ctx, rdb)
			rdb.ConfigResetStat(ctx)
		}
		env := workerEnv{
			backend:      backend,
			auth0URL:     auth0Srv.URL,
			redisAddr:    addrOf(rs),
			rules:        opts.RulesPath,
			pollInterval: opts.PollInterval,
			extra:        opts.ExtraEnv,
		}
		br := BackendReport{Backend: backend}

		env.tenant = fmt.Sprintf("bench-%s-catchup-%d", backend, rand.Uint32()%1e6)
		env.dataDir = filepath.Join(tmp, env.tenant)
		logf("%s: catch-up of %d events", backend, opts.Events)
		br.CatchUp, err = runCatchUp(ctx, opts, env, rs, rdb)
		if err != nil {
			return nil, fmt.Errorf("%s catch-up: %w", backend, err)
		}
		logf("%s: catch-up %.0f events/s, peak RSS %d MB", backend, br.CatchUp.Rate(), br.CatchUp.PeakRSS>>20)
		logf("%s: trimmed in %s; %d entries left, %d log_ids remembered, %.0f bytes per delivered event",
			backend, br.CatchUp.TrimmedIn.Round(100*time.Millisecond), br.CatchUp.StreamLeft, br.CatchUp.DedupeEntries,
			br.CatchUp.BytesPerEvent(backend))
		if backend == "redis" {
			logCommandStats(ctx, rdb, logf)
		}
		runtime.GC()

		env.tenant = fmt.Sprintf("bench-%s-steady-%d", backend, rand.Uint32()%1e6)
		env.dataDir = filepath.Join(tmp, env.tenant)
		logf("%s: steady %d events/s for %s", backend, opts.Rate, opts.SteadyFor)
		br.Steady, err = runSteady(ctx, opts, env)
		if err != nil {
			return nil, fmt.Errorf("%s steady: %w", backend, err)
		}
		logf("%s: steady p50 %s p99 %s", backend, br.Steady.Percentile(0.5), br.Steady.Percentile(0.99))
		rep.Backends = append(rep.Backends, br)
		runtime.GC()
	}

	if needRedis && opts.PushEvents > 0 {
		waitRedisIdle(ctx, rdb)
		env := workerEnv{backend: "redis", redisAddr: addrOf(rs), rules: opts.RulesPath, pollInterval: opts.PollInterval,
			extra: opts.ExtraEnv, tenant: fmt.Sprintf("bench-push-%d", rand.Uint32()%1e6)}
		logf("redis: push of %d logs to the Log Streams receiver, then %d logs/s for %s", opts.PushEvents, opts.PushRate, opts.PushFor)
		p, err := runPush(ctx, opts, env)
		if err != nil {
			return nil, fmt.Errorf("push: %w", err)
		}
		rep.Push = &p
		logf("redis: push accepted %.0f events/s; p99 push → Segment %s", p.AcceptedRate(), p.Percentile(0.99))
	}

	if needRedis {
		// After authpipe's runs, so that the AOF this writes cannot set
		// off a rewrite during them.
		waitRedisIdle(ctx, rdb)
		logf("measuring Redis' ceiling: pipelined XADD of the same %d payloads", opts.Events)
		redisCPU0, _ := readProc(rs.Pid())
		rep.Ceiling, err = measureCeiling(ctx, rdb, auth0)
		if err != nil {
			return nil, err
		}
		if st, err := readProc(rs.Pid()); err == nil {
			rep.Ceiling.RedisCPU = st.CPU - redisCPU0.CPU
		}
		logf("redis ceiling: %.0f events/s", rep.Ceiling.Rate())
		waitRedisIdle(ctx, rdb)
	}

	if opts.StageEvents > 0 {
		logf("stages alone, %d events each", opts.StageEvents)
		rep.Stages, err = measureStages(ctx, opts, auth0Srv.URL, auth0, rdb, tmp, logf)
		if err != nil {
			return nil, err
		}
	}
	self, _ := readProc(os.Getpid()) // the simulators live in this process
	rep.SimPeakRSS = self.HWM
	rep.Took = time.Since(began)
	return rep, nil
}

// waitRedisIdle waits (up to a minute) until Redis has no AOF rewrite in
// progress or scheduled.
func waitRedisIdle(ctx context.Context, rdb *redis.Client) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		info, err := rdb.InfoMap(ctx, "persistence").Result()
		if err != nil {
			return
		}
		p := info["Persistence"]
		if p["aof_rewrite_in_progress"] != "1" && p["aof_rewrite_scheduled"] != "1" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logCommandStats logs where redis-server spent its time, most first, and
// resets the counters.
func logCommandStats(ctx context.Context, rdb *redis.Client, logf func(string, ...any)) {
	info, err := rdb.InfoMap(ctx, "commandstats").Result()
	if err != nil {
		return
	}
	type stat struct {
		cmd   string
		calls int64
		usec  int64
	}
	var stats []stat
	for k, v := range info["Commandstats"] {
		var st stat
		st.cmd = strings.TrimPrefix(k, "cmdstat_")
		for _, f := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(f, "=")
			switch name {
			case "calls":
				fmt.Sscan(val, &st.calls)
			case "usec":
				fmt.Sscan(val, &st.usec)
			}
		}
		stats = append(stats, st)
	}
	slices.SortFunc(stats, func(a, b stat) int { return int(b.usec - a.usec) })
	for _, st := range stats[:min(len(stats), 12)] {
		logf("  redis %-14s %9d calls %8.2fs", st.cmd, st.calls, float64(st.usec)/1e6)
	}
	rdb.ConfigResetStat(ctx)
}

func addrOf(rs *redisServer) string {
	if rs == nil {
		return ""
	}
	return rs.Addr
}

// fill adds n generated events to a, dated evenly over span from start.
func fill(a *sim.Auth0, n int, start time.Time, span time.Duration) {
	spacing := span / time.Duration(max(n, 1))
	rng := rand.New(rand.NewPCG(8, 8))
	for done := 0; done < n; {
		k := min(addChunk, n-done)
		evs := sim.GenerateEvents(rng, k, start.Add(time.Duration(done)*spacing), spacing)
		a.Add(evs...)
		done += k
	}
}

// newSegment returns a Segment simulator served over HTTP and a recorder
// of its batch sizes.
func newSegment() (*sim.Segment, *httptest.Server, *batchLog) {
	bl := &batchLog{}
	seg := sim.NewSegment(sim.SegmentOptions{WriteKey: benchWriteKey, OnAccept: bl.record, IDsOnly: true})
	return seg, httptest.NewServer(seg), bl
}

type batchLog struct {
	mu    sync.Mutex
	sizes []int
	first time.Time
}

func (b *batchLog) record(ids []string) error {
	b.mu.Lock()
	if b.first.IsZero() {
		b.first = time.Now()
	}
	b.sizes = append(b.sizes, len(ids))
	b.mu.Unlock()
	return nil
}

func (b *batchLog) snapshot() ([]int, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sizes), b.first
}

// trimWait bounds the wait for the trim after a catch-up: authpipe trims
// every buffer.TrimInterval.
const trimWait = time.Minute

func runCatchUp(ctx context.Context, opts Options, env workerEnv, rs *redisServer, rdb *redis.Client) (CatchUp, error) {
	res := CatchUp{Events: opts.Events, BatchSize: batchSizeOf(opts.ExtraEnv)}
	seg, segSrv, batches := newSegment()
	defer segSrv.Close()
	env.segmentURL = segSrv.URL

	var redisCPU0 time.Duration
	if rs != nil && env.backend == "redis" {
		if st, err := readProc(rs.Pid()); err == nil {
			redisCPU0 = st.CPU
		}
	}
	if opts.ProfileDir != "" {
		env.extra = append(slices.Clip(env.extra), "AUTHPIPE_PPROF=true")
	}
	if rdb != nil && env.backend == "redis" {
		n, err := buffer.RedisMemory(ctx, rdb)
		if err != nil {
			return res, err
		}
		res.RedisBaseline = n
	}
	simCPU0 := selfCPU()
	w, err := startWorker(opts.Authpipe, env)
	if err != nil {
		return res, err
	}
	defer w.kill()
	if opts.ProfileDir != "" {
		go w.profile(filepath.Join(opts.ProfileDir, env.backend+"-catchup.pprof"), time.Second, 20*time.Second, opts.Log)
	}

	deadline := time.Now().Add(opts.Timeout)
	lastScrape := time.Time{}
	for {
		if err := w.exited(); err != nil {
			return res, err
		}
		if st, err := readProc(w.pid()); err == nil {
			res.PeakAnon = max(res.PeakAnon, st.Anon)
			res.PeakFile = max(res.PeakFile, st.File)
		}
		if time.Since(lastScrape) >= 250*time.Millisecond {
			lastScrape = time.Now()
			if n, err := w.metric("authpipe_buffer_backlog_events"); err == nil {
				res.PeakBacklog = max(res.PeakBacklog, int(n))
			}
			if env.backend == "bolt" {
				res.FilePeak = max(res.FilePeak, fileSize(env.dataDir))
			}
			if res.PolledIn == 0 {
				if n, err := w.metric("authpipe_auth0_events_polled_total"); err == nil && int(n) >= opts.Events {
					res.PolledIn = time.Since(w.started)
				}
			}
		}
		if seg.Count() >= opts.Events {
			res.Elapsed = time.Since(w.started)
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d events reached Segment within %s\n%s", seg.Count(), opts.Events, opts.Timeout, w.tail())
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	st, err := readProc(w.pid())
	if err != nil {
		return res, err
	}
	res.CPU, res.PeakRSS = st.CPU, st.HWM
	res.SimCPU = selfCPU() - simCPU0
	res.PeakAnon = max(res.PeakAnon, st.Anon)
	res.PeakFile = max(res.PeakFile, st.File)
	res.PolledIn = cmp.Or(res.PolledIn, res.Elapsed) // 0: the poll finished between two scrapes
	if rs != nil && env.backend == "redis" {
		if st, err := readProc(rs.Pid()); err == nil {
			res.RedisCPU = st.CPU - redisCPU0
		}
	}
	if err := measureRetained(ctx, &res, w, env, rdb); err != nil {
		return res, err
	}
	sst := seg.Stats()
	res.Requests, res.Duplicates = sst.Requests, sst.Duplicates
	var first time.Time
	res.Batches, first = batches.snapshot()
	res.FirstIn = first.Sub(w.started)
	return res, w.stop()
}

// measureRetained waits until the worker has trimmed its buffer after the
// catch-up (the stream holds no entry; at most trimWait) and records what
// the buffer keeps: Redis' used_memory, or the embedded buffer's file size.
func measureRetained(ctx context.Context, res *CatchUp, w *worker, env workerEnv, rdb *redis.Client) error {
	done := time.Now()
	for {
		n, err := w.metric("authpipe_buffer_stream_events")
		if err == nil && n == 0 {
			break
		}
		if time.Since(done) > trimWait {
			break // report what is left
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	res.TrimmedIn = time.Since(done)
	if n, err := w.metric("authpipe_buffer_stream_events"); err == nil {
		res.StreamLeft = int(n)
	}
	if n, err := w.metric("authpipe_buffer_dedupe_entries"); err == nil {
		res.DedupeEntries = int(n)
	}
	switch env.backend {
	case "redis":
		if rdb == nil {
			return nil
		}
		n, err := buffer.RedisMemory(ctx, rdb)
		if err != nil {
			return err
		}
		res.RedisUsed = n
	case "bolt":
		res.FilePeak = max(res.FilePeak, fileSize(env.dataDir))
		// Trim compacts a file that is mostly free pages right after the
		// trim that emptied it: wait for that (a smaller file never is).
		for res.FilePeak >= buffer.CompactMinBytes && time.Since(done) <= trimWait {
			if n, err := w.metric("authpipe_buffer_compactions_total"); err == nil && n > 0 {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		res.FileSize = fileSize(env.dataDir)
		if n, err := w.metric("authpipe_buffer_compactions_total"); err == nil {
			res.Compactions = int(n)
		}
	}
	return nil
}

// fileSize is the size of the buffer files in dir.
func fileSize(dir string) int64 {
	files, _ := filepath.Glob(filepath.Join(dir, "*.db"))
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// batchSizeOf returns SEGMENT_BATCH_SIZE from extra env, else authpipe's
// default.
func batchSizeOf(env []string) int {
	n := forward.DefaultBatchSize
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "SEGMENT_BATCH_SIZE="); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

func runSteady(ctx context.Context, opts Options, env workerEnv) (Steady, error) {
	res := Steady{Rate: opts.Rate, Duration: opts.SteadyFor, PollInterval: opts.PollInterval}
	total := int(float64(opts.Rate) * opts.SteadyFor.Seconds())
	res.Events = total
	// Generated before the clock starts; dated when added.
	evs := sim.GenerateEvents(rand.New(rand.NewPCG(5, 5)), total, time.Time{}, 0)
	for i := range evs {
		evs[i].Date = time.Time{}
	}
	auth0 := sim.NewAuth0(sim.Auth0Options{ClientID: benchClientID, ClientSecret: benchClientSecret})
	auth0Srv := httptest.NewServer(auth0)
	defer auth0Srv.Close()
	seg, segSrv, _ := newSegment()
	defer segSrv.Close()
	env.auth0URL, env.segmentURL = auth0Srv.URL, segSrv.URL

	w, err := startWorker(opts.Authpipe, env)
	if err != nil {
		return res, err
	}
	defer w.kill()
	if err := w.waitReady(ctx, time.Minute); err != nil {
		return res, err
	}
	st0, err := readProc(w.pid())
	if err != nil {
		return res, err
	}
	req0 := seg.Stats().Requests

	// Add at the steady rate in ticks of 10 ms, catching up on late ticks.
	added := make([]time.Time, total)
	ids := make([]string, 0, total)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for n := 0; n < total; {
		select {
		case <-ctx.Done():
			tick.Stop()
			return res, ctx.Err()
		case <-tick.C:
		}
		due := min(int(time.Since(start).Seconds()*float64(opts.Rate)), total)
		if due <= n {
			continue
		}
		got := auth0.Add(evs[n:due]...)
		now := time.Now()
		for i := n; i < due; i++ {
			added[i] = now
		}
		ids = append(ids, got...)
		n = due
	}
	tick.Stop()

	// Wait for the last events: at most a poll interval and a flush away.
	deadline := time.Now().Add(opts.PollInterval + 30*time.Second)
	for seg.Count() < total && time.Now().Before(deadline) {
		if err := w.exited(); err != nil {
			return res, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	st1, err := readProc(w.pid())
	if err != nil {
		return res, err
	}
	res.CPU, res.PeakRSS = st1.CPU-st0.CPU, st1.HWM
	res.Requests = seg.Stats().Requests - req0

	res.Latencies = make([]time.Duration, 0, total)
	for i, id := range ids {
		at, ok := seg.FirstSeen(forward.MessageID(env.tenant, id))
		if !ok {
			res.Missing++
			continue
		}
		res.Latencies = append(res.Latencies, at.Sub(added[i]))
	}
	slices.Sort(res.Latencies)
	return res, w.stop()
}

// machine describes this host from /proc.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	proc, err := procfs.NewDefaultFS()
	if err != nil {
		return m
	}
	if cpus, err := proc.CPUInfo(); err == nil && len(cpus) > 0 {
		m.CPUModel = cpus[0].ModelName
	}
	if mem, err := proc.Meminfo(); err == nil && mem.MemTotalBytes != nil {
		m.MemTotal = int64(*mem.MemTotalBytes)
	}
	return m
}
