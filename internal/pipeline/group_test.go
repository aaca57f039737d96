package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/run"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/testlogs"
)

// events records what the actors of a test did, in order.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.got...)
}

// worker is an actor that records its stop, taking hold to do so.
func (e *events) worker(name string, hold time.Duration) actor {
	return actor{name: name, late: name + " late", run: func(ctx context.Context) error {
		<-ctx.Done()
		e.add(name + " stopping")
		time.Sleep(hold)
		e.add(name + " stopped")
		return nil
	}}
}

func bufLogger() (*slog.Logger, *testlogs.Buffer) {
	var b testlogs.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// TestShutdownStopsStagesInOrder: when the context ends, the trigger's
// callback runs before anything stops; then each stage starts stopping
// only when every actor of the stages before it has returned, and the
// actors of one stage stop together.
func TestShutdownStopsStagesInOrder(t *testing.T) {
	var ev events
	logger, _ := bufLogger()
	sd := newShutdown(10*time.Second, logger)
	defer sd.release()
	ctx, cancel := context.WithCancel(t.Context())
	var g run.Group
	sd.trigger(&g, ctx, func(cause error) {
		require.NoError(t, cause)
		ev.add("readiness dropped")
	})
	sd.stage(&g, ev.worker("poller a", 30*time.Millisecond), ev.worker("poller b", 60*time.Millisecond))
	sd.stage(&g, ev.worker("forwarder", 30*time.Millisecond))
	sd.stage(&g, ev.worker("http", 0))
	done := make(chan error, 1)
	go func() { done <- g.Run() }()
	time.Sleep(20 * time.Millisecond)
	require.Empty(t, ev.list(), "nothing stops before the context ends")
	cancel()
	require.NoError(t, <-done)

	got := ev.list()
	require.Equal(t, "readiness dropped", got[0])
	require.ElementsMatch(t, []string{"poller a stopping", "poller b stopping"}, got[1:3], "a stage's actors stop together")
	require.ElementsMatch(t, []string{"poller a stopped", "poller b stopped"}, got[3:5])
	require.Equal(t, []string{"forwarder stopping", "forwarder stopped", "http stopping", "http stopped"}, got[5:])
	require.False(t, sd.leftBehind())
}

// TestShutdownFailedActorStopsTheRestInOrder: an actor that fails, or
// returns nil while the app runs, stops the group in the same order, and
// Run returns its error.
func TestShutdownFailedActorStopsTheRestInOrder(t *testing.T) {
	for _, tt := range []struct {
		name string
		ret  error
		want string
	}{
		{"error", errors.New("segment client: boom"), "forward t1: segment client: boom"},
		{"nil", nil, "forward t1: " + errStoppedEarly.Error()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var ev events
			logger, _ := bufLogger()
			sd := newShutdown(10*time.Second, logger)
			defer sd.release()
			var g run.Group
			var cause error
			sd.trigger(&g, t.Context(), func(c error) {
				cause = c
				ev.add("readiness dropped")
			})
			sd.stage(&g, ev.worker("poller", 0))
			sd.stage(&g, actor{name: "forward t1", run: func(context.Context) error {
				time.Sleep(20 * time.Millisecond)
				return tt.ret
			}})
			sd.stage(&g, ev.worker("http", 0))
			err := g.Run()
			require.EqualError(t, err, tt.want)
			require.EqualError(t, cause, tt.want, "the trigger learns the cause")
			require.Equal(t, []string{"readiness dropped", "poller stopping", "poller stopped", "http stopping", "http stopped"}, ev.list())
		})
	}
}

// TestShutdownDeadline: an actor that does not stop by the deadline is
// logged with what that means and left behind; the stages after it still
// stop, and the group returns within the deadline.
func TestShutdownDeadline(t *testing.T) {
	var ev events
	logger, logs := bufLogger()
	sd := newShutdown(300*time.Millisecond, logger)
	defer sd.release()
	ctx, cancel := context.WithCancel(t.Context())
	var g run.Group
	sd.trigger(&g, ctx, func(error) {})
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	sd.stage(&g, actor{name: "forward t1", late: "forwarder did not drain in time",
		run: func(context.Context) error { <-hung; return nil }})
	sd.stage(&g, ev.worker("http", 0))
	cancel()
	start := time.Now()
	require.NoError(t, g.Run())
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 300*time.Millisecond)
	require.Less(t, took, 5*time.Second, "bounded by the deadline, not by the hung actor")
	require.True(t, sd.leftBehind())
	require.Equal(t, []string{"http stopping", "http stopped"}, ev.list(), "later stages stop after the deadline")
	require.Contains(t, logs.String(), `msg="forwarder did not drain in time" actor="forward t1" shutdown_timeout=300ms`)
}

// TestShutdownErrorAfterStopIsLogged: an actor that returns an error once
// asked to stop does not fail the group; the error is logged.
func TestShutdownErrorAfterStopIsLogged(t *testing.T) {
	logger, logs := bufLogger()
	sd := newShutdown(time.Second, logger)
	defer sd.release()
	ctx, cancel := context.WithCancel(t.Context())
	var g run.Group
	sd.trigger(&g, ctx, func(error) {})
	sd.stage(&g, actor{name: "http server", run: func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("shut down: boom")
	}})
	cancel()
	require.NoError(t, g.Run())
	require.True(t, strings.Contains(logs.String(), `msg="stopped with an error" actor="http server" err="shut down: boom"`), logs.String())
}
