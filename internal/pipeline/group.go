package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/oklog/run"
)

// actor is one component of the run group: run works until its context
// ends, then returns.
type actor struct {
	name string
	run  func(context.Context) error
	// late is the message logged when the actor has not returned by the
	// shutdown deadline: that it did not stop, and what that means for
	// the data.
	late string
}

// errStoppedEarly is an actor returning nil while the app runs: a
// component that stops by itself is a fault like a failing one.
var errStoppedEarly = errors.New("stopped while the app was running")

// shutdown is the ordered stop of a run group. oklog/run calls the actors'
// interrupts one after another, in the order they were added; each stage's
// interrupts return only once its actors have returned (or the deadline
// passed), so a stage starts stopping only when the stages added before
// it have stopped. The deadline, AUTHPIPE_SHUTDOWN_TIMEOUT, runs from the
// first interrupt and bounds the whole stop.
type shutdown struct {
	timeout time.Duration
	logger  *slog.Logger

	once   sync.Once
	ctx    context.Context // ends at the deadline, once begun
	cancel context.CancelFunc
	begun  chan struct{}

	mu   sync.Mutex
	late bool // an actor was left behind
}

func newShutdown(timeout time.Duration, logger *slog.Logger) *shutdown {
	return &shutdown{timeout: timeout, logger: logger, begun: make(chan struct{})}
}

// begin starts the deadline; later calls do nothing.
func (s *shutdown) begin() {
	s.once.Do(func() {
		s.ctx, s.cancel = context.WithTimeout(context.Background(), s.timeout)
		close(s.begun)
	})
}

// deadline is the context that ends at the shutdown deadline; begin must
// have been called.
func (s *shutdown) deadline() context.Context {
	<-s.begun
	return s.ctx
}

// release frees the deadline's timer once the group has returned.
func (s *shutdown) release() {
	s.begin()
	s.cancel()
}

// leftBehind reports whether an actor was still running at the deadline.
func (s *shutdown) leftBehind() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.late
}

// trigger adds the actor that starts the shutdown: it returns when ctx
// ends, and its interrupt, the first the group calls, starts the deadline
// and calls first (which drops readiness) before any component stops.
func (s *shutdown) trigger(g *run.Group, ctx context.Context, first func(cause error)) {
	ctx, cancel := context.WithCancel(ctx)
	g.Add(func() error {
		<-ctx.Done()
		return nil
	}, func(cause error) {
		s.begin()
		first(cause)
		cancel()
	})
}

// lateGrace is how long an actor asked to stop after the deadline has
// passed is still waited for: most stop within a moment, and leaving
// one behind for nothing would close the buffers under it.
const lateGrace = time.Second

// stage adds actors that stop together: the first of their interrupts
// cancels the context they share; each interrupt then waits for its own
// actor until the deadline (or, past it, for lateGrace), and logs the
// actor's late message and leaves it behind if it has not returned by
// then. An actor that returns before the stop began fails the group: with
// its error, or errStoppedEarly.
func (s *shutdown) stage(g *run.Group, actors ...actor) {
	if len(actors) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := func() { cancel() } // the interrupts' (vet sees no use of cancel otherwise)
	for _, a := range actors {
		done := make(chan struct{})
		abandoned := make(chan struct{})
		var err error
		g.Add(func() error {
			go func() {
				defer close(done)
				err = a.run(ctx)
			}()
			select {
			case <-done:
			case <-abandoned:
				return nil
			}
			if ctx.Err() != nil { // stopped when asked to
				if err != nil {
					s.logger.Warn("stopped with an error", "actor", a.name, "err", err)
				}
				return nil
			}
			if err == nil {
				err = errStoppedEarly
			}
			return fmt.Errorf("%s: %w", a.name, err)
		}, func(error) {
			stop()
			deadline, _ := s.deadline().Deadline() // waits for begin
			wait := time.NewTimer(max(time.Until(deadline), lateGrace))
			defer wait.Stop()
			select {
			case <-done:
			case <-wait.C:
				s.mu.Lock()
				s.late = true
				s.mu.Unlock()
				s.logger.Warn(a.late, "actor", a.name, "shutdown_timeout", s.timeout.String())
				close(abandoned)
			}
		})
	}
}
