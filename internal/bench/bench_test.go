package bench

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSmoke runs the whole benchmark with a few thousand events: the real
// `authpipe run` binary against the simulators, with Redis and with the
// embedded buffer. No figure is asserted (timings depend on the machine);
// that every event arrives, and that every figure is printed, is.
func TestSmoke(t *testing.T) {
	root, err := moduleRoot()
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "authpipe")
	build := exec.Command("go", "build", "-o", bin, "./cmd/authpipe")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build authpipe: %s", out)

	var progress bytes.Buffer
	rep, err := Run(t.Context(), Options{
		Authpipe:     bin,
		Events:       2000,
		Rate:         1000,
		SteadyFor:    2 * time.Second,
		PollInterval: 200 * time.Millisecond,
		StageEvents:  1000,
		PushEvents:   2000,
		PushRate:     1000,
		PushFor:      2 * time.Second,
		Timeout:      time.Minute,
		Log:          &progress,
	})
	require.NoError(t, err, "progress:\n%s", progress.String())

	require.Len(t, rep.Backends, 2)
	for _, b := range rep.Backends {
		require.Equal(t, 2000, b.CatchUp.Events, b.Backend)
		require.Positive(t, b.CatchUp.Rate(), b.Backend)
		require.Positive(t, b.CatchUp.PeakRSS, b.Backend)
		require.Positive(t, b.CatchUp.Requests, b.Backend)
		require.NotEmpty(t, b.CatchUp.Batches, b.Backend)
		require.Zero(t, b.Steady.Missing, "%s: events the steady run did not deliver", b.Backend)
		require.Len(t, b.Steady.Latencies, b.Steady.Events, b.Backend)
		require.Positive(t, b.Steady.Percentile(0.99), b.Backend)
	}
	require.NotNil(t, rep.Push, "the Log Streams push runs")
	require.Equal(t, 2000, rep.Push.Events)
	require.Positive(t, rep.Push.AcceptedRate())
	require.Zero(t, rep.Push.Missing, "pushed logs the latency run did not deliver")
	require.Len(t, rep.Push.Latencies, 2000)
	require.Positive(t, rep.Push.Percentile(0.99))
	require.Equal(t, 2000, rep.Ceiling.Events)
	require.Positive(t, rep.Ceiling.Rate())
	// The simulators' CPU comes from getrusage (microseconds). Redis' CPU
	// of a ceiling run this short can be under /proc's 10 ms resolution:
	// the accounting is checked with fixed figures in TestBudget.
	require.Positive(t, rep.Backends[0].CatchUp.SimCPU)
	// poll, map, analytics-go encoding, then append, read+ack and forward per backend
	require.Len(t, rep.Stages, 9)

	var printed bytes.Buffer
	rep.Print(&printed)
	for _, want := range []string{
		"end to end, events/s", "poll + buffer append", "forward, events/s", "latency p50", "latency p99",
		"worker peak RSS", "CPU s per million events", "Segment requests per 1000 events",
		"REDIS CEILING", "STAGES ALONE", "LOG STREAMS PUSH", "push → Segment at 1,000 events/s", "TARGETS", "redis", "bolt",
		"CPU PER EVENT IN THE CATCH-UP", "redis: worker", "bolt: worker", "analytics-go's JSON encoding", "simulators",
	} {
		require.Contains(t, printed.String(), want)
	}
	if testing.Verbose() {
		t.Log("\n" + printed.String())
	}
}

// The CPU budget: per-event figures, the rate they allow, and the part
// authpipe does not control, from fixed measurements.
func TestBudget(t *testing.T) {
	rep := &Report{
		Machine: Machine{CPUs: 2},
		Backends: []BackendReport{
			{Backend: "redis", CatchUp: CatchUp{Events: 1000, Elapsed: 50 * time.Millisecond,
				CPU: 40 * time.Millisecond, RedisCPU: 20 * time.Millisecond, SimCPU: 20 * time.Millisecond}},
			{Backend: "bolt", CatchUp: CatchUp{Events: 1000, Elapsed: 40 * time.Millisecond,
				CPU: 60 * time.Millisecond, SimCPU: 20 * time.Millisecond}},
		},
		Ceiling: Ceiling{Events: 2000, RedisCPU: 10 * time.Millisecond},
		Stages:  []StageResult{{Name: stageAnalyticsEncoding, Events: 500, Elapsed: 7500 * time.Microsecond}},
	}
	var out bytes.Buffer
	rep.printBudget(&out)
	require.Equal(t, `
CPU PER EVENT IN THE CATCH-UP (µs; 2 CPUs give 2,000,000 µs per second)
  redis: worker 40.0 + redis-server 20.0 + simulators 20.0 = 80.0 µs → at most 25,000 events/s with every CPU busy (measured 20,000)
  bolt: worker 60.0 + simulators 20.0 = 80.0 µs → at most 25,000 events/s with every CPU busy (measured 25,000)
  50,000 events/s on 2 CPUs leaves 40 µs per event for all of it.
  Not authpipe's to remove (µs per event): analytics-go's JSON encoding 15.0; Redis writing the entries alone (ceiling run) 5.0; simulators 20.0.
`, out.String())
}
