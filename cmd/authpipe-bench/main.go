// Command authpipe-bench is authpipe's end-to-end benchmark (`make bench`):
// the Auth0 simulator without rate limit → `authpipe run` (a subprocess,
// with a private redis-server or the embedded buffer) → the Segment
// simulator. See internal/bench for what each figure means.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/authpipe/authpipe/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("authpipe-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts     bench.Options
		backends string
		env      multiFlag
		quiet    bool
		cpuprof  string
		tracef   string
	)
	fs.StringVar(&opts.Authpipe, "authpipe", "bin/authpipe", "the authpipe binary to run (make bench builds it)")
	fs.IntVar(&opts.Events, "events", 1_000_000, "events waiting in the Auth0 simulator for the catch-up run")
	fs.IntVar(&opts.Rate, "rate", 5000, "events per second of the steady run (latency)")
	fs.DurationVar(&opts.SteadyFor, "steady", 30*time.Second, "duration of the steady run")
	fs.DurationVar(&opts.PollInterval, "poll-interval", time.Second, "AUTH0_POLL_INTERVAL of the worker")
	fs.IntVar(&opts.StageEvents, "stage-events", 0, "events of each stage measured alone (default min(events, 200000); -1 skips)")
	fs.IntVar(&opts.PushEvents, "push-events", 200_000, "logs pushed to the Log Streams receiver for its accepted rate (with redis; -1 skips the push runs)")
	fs.IntVar(&opts.PushRate, "push-rate", 1000, "logs per second pushed for the push → Segment latency")
	fs.DurationVar(&opts.PushFor, "push-for", 30*time.Second, "duration of the push latency run")
	fs.StringVar(&backends, "backends", "redis,bolt", "buffer backends to measure: redis, bolt or both")
	fs.StringVar(&opts.RedisServer, "redis-server", "", "redis-server binary (default: from PATH)")
	fs.StringVar(&opts.RulesPath, "rules", "", "AUTHPIPE_RULES of the worker (default: alerts/thresholds.yml of the module)")
	fs.Var(&env, "env", "extra NAME=VALUE for the worker, e.g. -env SEGMENT_BATCH_SIZE=500 (repeatable)")
	fs.DurationVar(&opts.Timeout, "timeout", 10*time.Minute, "bound on each run")
	fs.BoolVar(&quiet, "q", false, "no progress lines on stderr")
	fs.StringVar(&cpuprof, "cpuprofile", "", "write a CPU profile of the bench process (the stages alone run in it) to this file")
	fs.StringVar(&opts.ProfileDir, "worker-profiles", "", "write a 20 s CPU profile of each worker's catch-up (AUTHPIPE_PPROF) into this directory")
	fs.StringVar(&tracef, "trace", "", "write an execution trace of the bench process to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts.Backends = strings.Split(backends, ",")
	opts.ExtraEnv = env
	if !quiet {
		opts.Log = stderr
	}

	for _, p := range []struct {
		path  string
		start func(io.Writer) error
		stop  func()
	}{{cpuprof, pprof.StartCPUProfile, pprof.StopCPUProfile}, {tracef, trace.Start, trace.Stop}} {
		if p.path == "" {
			continue
		}
		f, err := os.Create(p.path)
		if err == nil {
			defer f.Close()
			err = p.start(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "authpipe-bench:", err)
			return 1
		}
		defer p.stop()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "authpipe-bench:", err)
		return 1
	}
	fmt.Fprintf(stdout, "command: authpipe-bench %s\n", strings.Join(args, " "))
	rep.Print(stdout)
	return 0
}

type multiFlag []string

func (m *multiFlag) String() string { return strings.Join(*m, " ") }

func (m *multiFlag) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("want NAME=VALUE, got %q", v)
	}
	*m = append(*m, v)
	return nil
}
