package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
)

const runUsage = `Usage: authpipe run

Runs the worker: polls Auth0's logs into the buffer, forwards them to Segment
and runs the threshold checks, until SIGINT or SIGTERM (SIGHUP reloads the
threshold rules). It takes no arguments: configure it with the environment
and the YAML file named by AUTHPIPE_CONFIG (see CONFIGURATION.md). Check a
configuration against the live services first with authpipe check.
`

func runCommand(args []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		fmt.Fprint(stdout, runUsage)
		return 0
	}
	if len(args) > 0 {
		fmt.Fprintf(stderr, "authpipe run: takes no arguments (got %q); configure it with the environment or AUTHPIPE_CONFIG\n", args)
		return 2
	}
	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	// Libraries that log through the process' default logger, go-redis
	// (through the adapter main installs) and net/http's servers (through
	// the log package), log through this one too.
	slog.SetDefault(logger)
	tuneGC(os.LookupEnv)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	app, err := pipeline.New(cfg, pipeline.Deps{Logger: logger, Registry: newRegistry(), Version: version})
	if err == nil {
		err = app.Run(ctx, hup)
	}
	if err != nil {
		logger.Error("authpipe stopped with an error", "err", err)
		return 1
	}
	return 0
}

// newRegistry is the worker's registry, with the Go runtime's and the
// process' collectors and authpipe_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name:        "authpipe_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": buildRevision(), "goversion": runtime.Version()},
	}).Set(1)
	return reg
}

func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("config: AUTHPIPE_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(componentHandler{Handler: slog.NewTextHandler(w, opts)}), nil
	}
	return slog.New(componentHandler{Handler: slog.NewJSONHandler(w, opts)}), nil
}
