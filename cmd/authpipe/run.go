package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/status"
	"github.com/authpipe/authpipe/internal/thresholds"
)

// forwardGroup is the buffer consumer group of the Segment forwarder.
const forwardGroup = "forward"

func runCommand(args []string, stderr io.Writer) int {
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Repeated SIGHUPs collapse into one pending reload.
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()

	if err := run(ctx, cfg, logger, reload); err != nil {
		logger.Error("authpipe stopped with an error", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return nil, fmt.Errorf("config: AUTHPIPE_LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// app is one running worker: its components and the state its probes report.
type app struct {
	cfg    *config.Config
	logger *slog.Logger
	reg    *prometheus.Registry

	buf      pipelineBuffer
	closeBuf func() error
	redis    redis.UniversalClient // nil with the embedded buffer
	poller   *auth0poll.Poller
	fwd      *forward.Forwarder
	rules    *thresholds.Engine

	bufOK    atomic.Bool
	draining atomic.Bool
	ready    prometheus.Gauge
}

func run(ctx context.Context, cfg *config.Config, logger *slog.Logger, reload <-chan struct{}) error {
	a, err := newApp(cfg, logger)
	if err != nil {
		return err
	}
	return a.run(ctx, reload)
}

func newApp(cfg *config.Config, logger *slog.Logger) (*app, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := promauto.With(reg)
	f.NewGauge(prometheus.GaugeOpts{
		Name:        "authpipe_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "revision": buildRevision(), "goversion": runtime.Version()},
	}).Set(1)
	a := &app{
		cfg:    cfg,
		logger: logger,
		reg:    reg,
		ready: f.NewGauge(prometheus.GaugeOpts{
			Name: "authpipe_ready",
			Help: "1 when Redis and Auth0 have answered and the worker is not shutting down.",
		}),
	}
	stages := metrics.NewStages(reg)

	if err := a.openBuffer(stages); err != nil {
		return nil, err
	}
	var err error

	a.poller, err = auth0poll.New(auth0poll.Config{
		Tenant:         cfg.Tenant,
		Domain:         cfg.Auth0.Domain,
		ClientID:       cfg.Auth0.ClientID,
		ClientSecret:   cfg.Auth0.ClientSecret.Reveal(),
		Retention:      cfg.Auth0.LogRetention,
		PollInterval:   cfg.Auth0.PollInterval,
		PageSize:       cfg.Auth0.PageSize,
		RequestTimeout: cfg.Auth0.RequestTimeout,
	}, a.buf, auth0poll.Deps{Logger: logger, Registerer: reg, Stages: stages})
	if err != nil {
		a.closeBuf()
		return nil, fmt.Errorf("build poller: %w", err)
	}

	a.fwd, err = forward.New(forward.Config{
		Tenant:        cfg.Tenant,
		WriteKey:      cfg.Segment.WriteKey.Reveal(),
		Endpoint:      cfg.Segment.Endpoint,
		BatchSize:     cfg.Segment.BatchSize,
		FlushInterval: cfg.Segment.FlushInterval,
		MaxInFlight:   cfg.Segment.MaxInFlight,
		Group:         forwardGroup,
		Consumer:      cfg.Buffer.Consumer,
		ReclaimIdle:   cfg.Buffer.ReclaimIdle,
		HashKey:       cfg.AnonymousIDKey(),
		DrainTimeout:  drainTimeout(cfg.ShutdownTimeout),
	}, a.buf, forward.Deps{Logger: logger, Registerer: reg, Stages: stages})
	if err != nil {
		a.closeBuf()
		return nil, fmt.Errorf("build forwarder: %w", err)
	}
	if err := a.buildRules(); err != nil {
		a.closeBuf()
		return nil, err
	}
	return a, nil
}

// buildRules builds the threshold engine over the buffer's own consumer
// group: shared counts and a lease on Redis, in-process counts rebuilt from
// the stream on the embedded buffer.
func (a *app) buildRules() error {
	cfg := thresholds.Config{
		Tenant:          a.cfg.Tenant,
		RulesPath:       a.cfg.RulesPath,
		AlertmanagerURL: a.cfg.AlertmanagerURL,
		WebhookURL:      a.cfg.AlertWebhookURL,
		Consumer:        a.cfg.Buffer.Consumer,
	}
	switch b := a.buf.(type) {
	case thresholds.Buffer:
		cfg.Buffer = b
	case thresholds.LocalBuffer:
		cfg.Local = b
	default:
		return fmt.Errorf("threshold checks: unsupported buffer %T", a.buf)
	}
	var err error
	a.rules, err = thresholds.New(cfg, thresholds.Deps{Logger: a.logger, Registerer: a.reg})
	if err != nil {
		return fmt.Errorf("AUTHPIPE_RULES: %w", err)
	}
	return nil
}

// pipelineBuffer is what the worker needs of either buffer backend.
type pipelineBuffer interface {
	auth0poll.Buffer
	forward.Buffer
	Ping(ctx context.Context) error
	Trim(ctx context.Context) (int64, error)
}

// openBuffer opens Redis when REDIS_URL is set, else the embedded buffer in
// AUTHPIPE_DATA_DIR.
func (a *app) openBuffer(stages *metrics.Stages) error {
	cfg := a.cfg
	bcfg := buffer.Config{
		Tenant:        cfg.Tenant,
		Retention:     cfg.Auth0.LogRetention,
		MaxDeliveries: cfg.Buffer.MaxDeliveries,
		MaxEvents:     cfg.Buffer.MaxEvents,
	}
	deps := buffer.Deps{Logger: a.logger, Registerer: a.reg, Stages: stages}
	if cfg.Redis.URL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("create AUTHPIPE_DATA_DIR: %w", err)
		}
		b, err := buffer.OpenBolt(cfg.DataDir, bcfg, deps)
		if err != nil {
			return err
		}
		a.buf, a.closeBuf = b, b.Close
		a.logger.Info("using the embedded buffer", "path", b.Path())
		return nil
	}
	opts, err := redis.ParseURL(cfg.Redis.URL.Reveal())
	if err != nil {
		// go-redis may echo the URL, which can carry a password.
		return errors.New("config: REDIS_URL: not a valid redis:// or rediss:// URL")
	}
	opts.ContextTimeoutEnabled = true
	a.redis = redis.NewClient(opts)
	b, err := buffer.NewRedis(a.redis, bcfg, deps)
	if err != nil {
		a.redis.Close()
		return fmt.Errorf("build buffer: %w", err)
	}
	a.buf, a.closeBuf = b, a.redis.Close
	return nil
}

// drainTimeout leaves part of the shutdown budget for the steps after the
// forwarder's drain (closing Segment clients, flushing acks, closing Redis).
func drainTimeout(shutdown time.Duration) time.Duration {
	return shutdown * 2 / 3
}

// run starts every actor and, when ctx ends, stops them in the delivery
// contract's order: stop polling → drain the forwarder → close Redis.
func (a *app) run(ctx context.Context, reload <-chan struct{}) error {
	srv, ln, err := a.listen()
	if err != nil {
		return err
	}
	a.logger.Info("authpipe started", "version", version, "listen", ln.Addr().String(), "tenant", a.cfg.Tenant)

	failed := make(chan error, 4)
	var wg sync.WaitGroup
	start := func(name string, ctx context.Context, fn func(context.Context) error) <-chan struct{} {
		done := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				failed <- fmt.Errorf("%s: %w", name, err)
			}
		}()
		return done
	}

	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			failed <- fmt.Errorf("http server: %w", err)
		}
	}()

	pollCtx, stopPoll := context.WithCancel(context.Background())
	fwdCtx, stopFwd := context.WithCancel(context.Background())
	bgCtx, stopBg := context.WithCancel(context.Background())
	defer stopPoll()
	defer stopFwd()
	defer stopBg()

	fwdDone := start("forward", fwdCtx, a.fwd.Run)
	pollDone := start("auth0poll", pollCtx, a.poller.Run)
	bgDone := start("maintenance", bgCtx, a.maintain)
	rulesCtx, stopRules := context.WithCancel(context.Background())
	defer stopRules()
	rulesDone := start("thresholds", rulesCtx, a.rules.Run)
	go a.drainReload(bgCtx, reload)

	var runErr error
	select {
	case <-ctx.Done():
		a.logger.Info("shutdown requested")
	case runErr = <-failed:
		a.logger.Error("component failed; shutting down", "err", runErr)
	}

	deadline := time.Now().Add(a.cfg.ShutdownTimeout)
	a.draining.Store(true)
	a.ready.Set(0)

	stopPoll()
	if !waitUntil(pollDone, deadline) {
		a.logger.Warn("poller did not stop in time; its last page is fetched again after restart")
	}
	stopRules()
	stopBg()
	stopFwd()
	if !waitUntil(fwdDone, deadline) {
		a.logger.Warn("forwarder did not drain in time; unacknowledged events stay pending and are delivered after restart (Segment drops the duplicates)")
	}
	waitUntil(bgDone, deadline)
	waitUntil(rulesDone, deadline)
	if err := a.closeBuf(); err != nil {
		a.logger.Warn("close buffer", "err", err)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	a.logger.Info("authpipe stopped")
	return runErr
}

func waitUntil(done <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// maintain keeps readiness current and trims the buffer.
func (a *app) maintain(ctx context.Context) error {
	if err := a.buf.EnsureGroup(ctx, forwardGroup); err != nil && ctx.Err() == nil {
		a.logger.Warn("create consumer group", "err", err)
	}
	probe := time.NewTicker(2 * time.Second)
	defer probe.Stop()
	trim := time.NewTicker(time.Minute)
	defer trim.Stop()
	a.probe(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-probe.C:
			a.probe(ctx)
		case <-trim.C:
			n, err := a.buf.Trim(ctx)
			if err != nil {
				a.logger.Warn("trim buffer", "err", err)
			} else if n > 0 {
				a.logger.Debug("trimmed buffer", "entries", n)
			}
		}
	}
}

func (a *app) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	a.bufOK.Store(a.buf.Ping(pctx) == nil)
	if a.isReady() {
		a.ready.Set(1)
	} else {
		a.ready.Set(0)
	}
}

func (a *app) isReady() bool {
	return !a.draining.Load() && a.bufOK.Load() && a.poller.Ready()
}

func (a *app) drainReload(ctx context.Context, reload <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			if err := a.rules.Reload(); err != nil {
				a.logger.Error("reload threshold rules; the previous rules stay in force", "err", err)
			} else {
				a.logger.Info("threshold rules reloaded")
			}
		}
	}
}

func (a *app) listen() (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("/", status.NewHandler(a.reg, status.Options{Retention: a.cfg.Auth0.LogRetention}))
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "authpipe is healthy")
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case a.draining.Load():
			http.Error(w, "authpipe is shutting down", http.StatusServiceUnavailable)
		case !a.bufOK.Load():
			http.Error(w, "authpipe is not ready: the buffer has not answered", http.StatusServiceUnavailable)
		case !a.poller.Ready():
			http.Error(w, "authpipe is not ready: Auth0 has not answered", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "authpipe is ready")
		}
	})
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on AUTHPIPE_LISTEN %s: %w", a.cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv, ln, nil
}
