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
	require.Equal(t, 2000, rep.Ceiling.Events)
	require.Positive(t, rep.Ceiling.Rate())
	// Redis' CPU during a ceiling run this short can be below /proc's 10 ms
	// resolution; the simulators' comes from getrusage, in microseconds.
	require.GreaterOrEqual(t, rep.Ceiling.RedisCPU, time.Duration(0))
	require.Positive(t, rep.Backends[0].CatchUp.SimCPU)
	// poll, map, analytics-go encoding, then append, read+ack and forward per backend
	require.Len(t, rep.Stages, 9)

	var printed bytes.Buffer
	rep.Print(&printed)
	for _, want := range []string{
		"end to end, events/s", "poll + buffer append", "forward, events/s", "latency p50", "latency p99",
		"worker peak RSS", "CPU s per million events", "Segment requests per 1000 events",
		"REDIS CEILING", "STAGES ALONE", "TARGETS", "redis", "bolt",
		"CPU PER EVENT IN THE CATCH-UP", "redis: worker", "bolt: worker", "analytics-go's JSON encoding", "simulators",
	} {
		require.Contains(t, printed.String(), want)
	}
	if testing.Verbose() {
		t.Log("\n" + printed.String())
	}
}
