package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/logrepeat"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/status"
	"github.com/authpipe/authpipe/internal/thresholds"
)

// forwardGroup is the buffer consumer group of the Segment forwarder.
const forwardGroup = "forward"

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
		return slog.New(componentHandler{Handler: slog.NewTextHandler(w, opts)}), nil
	}
	return slog.New(componentHandler{Handler: slog.NewJSONHandler(w, opts)}), nil
}

// app is one running worker: its components and the state its probes report.
type app struct {
	cfg    *config.Config
	logger *slog.Logger
	reg    *prometheus.Registry

	rules    rulesSource           // the threshold rules of every tenant
	redis    redis.UniversalClient // shared by every tenant; nil with the embedded buffer
	safety   *buffer.SafetyWatch   // Redis' persistence and eviction settings; nil with the embedded buffer
	tenants  []*tenantPipeline     // one per configured tenant (config.AllTenants)
	backfill *backfiller           // the admin API's Backfiller
	trail    *audit.Trail          // the admin API's audit trail; nil when the API is off

	bufOK    atomic.Bool
	draining atomic.Bool
	ready    prometheus.Gauge

	rep *logrepeat.Summarizer // the maintenance loop's repeated errors
}

func run(ctx context.Context, cfg *config.Config, logger *slog.Logger, reload <-chan struct{}) error {
	a, err := newApp(cfg, logger)
	if err != nil {
		return err
	}
	if err := a.requireSafeRedis(ctx); err != nil {
		a.close()
		return err
	}
	return a.run(ctx, reload)
}

// safetyEvery is how often Redis' settings are checked again: a fail-over
// or a CONFIG SET can change them while authpipe runs.
const safetyEvery = 5 * time.Minute

// requireSafeRedis refuses to start, when AUTHPIPE_REQUIRE_SAFE_REDIS is
// set, on a Redis whose settings can lose the buffer. It waits for Redis to
// answer (the check must be made before anything starts); a Redis that
// refuses CONFIG is unknown, not unsafe, and is accepted.
func (a *app) requireSafeRedis(ctx context.Context) error {
	if a.safety == nil || !a.cfg.Redis.RequireSafe {
		return nil
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := a.safety.Check(cctx)
		cancel()
		if err == nil {
			a.rep.OK(ctx, actCheckSafety)
			if len(s.Problems) == 0 {
				return nil
			}
			problems := make([]string, len(s.Problems))
			for i, p := range s.Problems {
				problems[i] = p.String()
			}
			return fmt.Errorf("refusing to start (AUTHPIPE_REQUIRE_SAFE_REDIS=true): Redis can lose the buffer: %s", strings.Join(problems, "; "))
		}
		a.rep.Fail(ctx, actCheckSafety, slog.LevelWarn, "waiting for Redis to check its persistence and eviction settings (AUTHPIPE_REQUIRE_SAFE_REDIS=true)", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("check Redis settings: %w", ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
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
		rep:    logrepeat.New(logger.With("component", "maintenance"), nil, 0),
		ready: f.NewGauge(prometheus.GaugeOpts{
			Name: "authpipe_ready",
			Help: "1 when Redis and Auth0 have answered and the worker is not shutting down.",
		}),
	}
	stages := metrics.NewStages(reg)
	leader := f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "authpipe_auth0_poller_leader",
		Help: "1 on the replica that polls the tenant's Auth0 logs (it holds the tenant's poller lease), else 0.",
	}, []string{"tenant"})

	var err error
	if a.rules, err = resolveRules(cfg.RulesPath); err != nil {
		return nil, err
	}
	if a.rules.builtIn() {
		logger.Info("threshold rules: AUTHPIPE_RULES is unset and alerts/thresholds.yml is absent; using the shipped rules built into the binary",
			"rules", a.rules.path)
	} else {
		logger.Info("threshold rules", "rules", a.rules.path)
	}
	if err := a.openRedis(); err != nil {
		return nil, err
	}
	for _, tenant := range cfg.AllTenants() {
		t, err := a.newTenant(cfg.ForTenant(tenant), stages, leader.WithLabelValues(tenant.Name))
		if err != nil {
			a.close()
			return nil, fmt.Errorf("tenant %s: %w", tenant.Name, err)
		}
		a.tenants = append(a.tenants, t)
	}
	a.backfill = newBackfiller(a.tenants, a.logger)
	return a, nil
}

// newTenant builds one tenant's buffer, poller, forwarder and threshold
// engine; cfg is the tenant's view of the configuration.
func (a *app) newTenant(cfg *config.Config, stages *metrics.Stages, leader prometheus.Gauge) (*tenantPipeline, error) {
	logger, reg := a.logger, a.reg
	t := &tenantPipeline{name: cfg.Tenant, cfg: cfg, logger: logger.With("tenant", cfg.Tenant), leader: leader}
	if err := a.openBuffer(t, stages); err != nil {
		return nil, err
	}
	pollBuf := auth0poll.Buffer(t.buf)
	if rb, ok := t.buf.(*buffer.Redis); ok {
		var err error
		if pollBuf, err = t.newPollerLease(rb); err != nil {
			t.close()
			return nil, err
		}
	}
	var err error

	t.poller, err = auth0poll.New(pollerConfig(cfg), pollBuf, auth0poll.Deps{Logger: logger, Registerer: reg, Stages: stages})
	if err != nil {
		t.close()
		return nil, fmt.Errorf("build poller: %w", err)
	}

	t.fwd, err = forward.New(forward.Config{
		Tenant:        cfg.Tenant,
		WriteKey:      cfg.Segment.WriteKey,
		Endpoint:      cfg.Segment.Endpoint,
		BatchSize:     cfg.Segment.BatchSize,
		FlushInterval: cfg.Segment.FlushInterval,
		MaxInFlight:   cfg.Segment.MaxInFlight,
		Group:         forwardGroup,
		Consumer:      cfg.Buffer.Consumer,
		ReclaimIdle:   cfg.Buffer.ReclaimIdle,
		HashKey:       cfg.AnonymousIDKey(),
		DrainTimeout:  drainTimeout(cfg.ShutdownTimeout),
		Filter:        forward.Filter{Include: cfg.Forward.IncludeTypes, Exclude: cfg.Forward.ExcludeTypes},
		PII: forward.PIIPolicy{
			UserName: forward.PIIAction(cfg.PII.UserName), Email: forward.PIIAction(cfg.PII.Email),
			IP: forward.PIIAction(cfg.PII.IP), UserAgent: forward.PIIAction(cfg.PII.UserAgent),
		},
	}, t.buf, forward.Deps{Logger: logger, Registerer: reg, Stages: stages})
	if err != nil {
		t.close()
		return nil, fmt.Errorf("build forwarder: %w", err)
	}
	if err := a.buildRules(t); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

// pollerConfig is the Auth0 poller's configuration for a tenant's view of
// the configuration (authpipe run and authpipe backfill).
func pollerConfig(cfg *config.Config) auth0poll.Config {
	return auth0poll.Config{
		Tenant:         cfg.Tenant,
		Domain:         cfg.Auth0.Domain,
		ClientID:       cfg.Auth0.ClientID,
		ClientSecret:   cfg.Auth0.ClientSecret,
		Retention:      cfg.Auth0.LogRetention,
		PollInterval:   cfg.Auth0.PollInterval,
		PageSize:       cfg.Auth0.PageSize,
		RequestTimeout: cfg.Auth0.RequestTimeout,
		RateLimitShare: cfg.Auth0.RateLimitShare,
		LagAlertRatio:  cfg.LagAlertRatio,
	}
}

// buildRules builds the threshold engine over the buffer's own consumer
// group: shared counts and a lease on Redis, in-process counts rebuilt from
// the stream on the embedded buffer.
func (a *app) buildRules(t *tenantPipeline) error {
	cfg := thresholds.Config{
		Tenant:          t.cfg.Tenant,
		RulesPath:       a.rules.path,
		Rules:           a.rules.data,
		AlertmanagerURL: t.cfg.AlertmanagerURL,
		WebhookURL:      t.cfg.AlertWebhookURL,
		Consumer:        t.cfg.Buffer.Consumer,
		LeaseTTL:        t.cfg.Buffer.LeaseTTL,
	}
	switch b := t.buf.(type) {
	case thresholds.Buffer:
		cfg.Buffer = b
	case thresholds.LocalBuffer:
		cfg.Local = b
	default:
		return fmt.Errorf("threshold checks: unsupported buffer %T", t.buf)
	}
	var err error
	t.rules, err = thresholds.New(cfg, thresholds.Deps{Logger: a.logger, Registerer: a.reg})
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
	CheckLoss(ctx context.Context) error
}

// openRedis connects the client all tenants share when REDIS_URL is set:
// one server, Sentinel or Cluster (config.RedisOptions). It makes no call.
func (a *app) openRedis() error {
	if a.cfg.Redis.URL == "" {
		return nil
	}
	opts, mode, err := config.RedisOptions(a.cfg.Redis.URL.Reveal())
	if err != nil {
		return fmt.Errorf("config: REDIS_URL: %w", err) // never quotes the URL
	}
	a.redis = redis.NewUniversalClient(opts)
	a.safety = buffer.NewSafetyWatch(a.redis, a.logger, a.reg)
	a.logger.Info("using the Redis buffer", "redis", string(mode), "addrs", len(opts.Addrs))
	return nil
}

// openBuffer opens the tenant's buffer: on the shared Redis client when
// REDIS_URL is set, else the embedded buffer in AUTHPIPE_DATA_DIR (one file
// per tenant).
func (a *app) openBuffer(t *tenantPipeline, stages *metrics.Stages) error {
	cfg := t.cfg
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
		t.buf, t.closeBuf = b, b.Close
		t.logger.Info("using the embedded buffer", "path", b.Path())
		return nil
	}
	b, err := buffer.NewRedis(a.redis, bcfg, deps)
	if err != nil {
		return fmt.Errorf("build buffer: %w", err)
	}
	t.buf = b
	return nil
}

// close closes every tenant's buffer and the shared Redis client.
func (a *app) close() {
	for _, t := range a.tenants {
		if err := t.close(); err != nil {
			a.logger.Warn("close buffer", "tenant", t.name, "err", err)
		}
	}
	if a.redis != nil {
		if err := a.redis.Close(); err != nil {
			a.logger.Warn("close redis", "err", err)
		}
	}
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
	names := make([]string, len(a.tenants))
	for i, t := range a.tenants {
		names[i] = t.name
	}
	a.logger.Info("authpipe started", "version", version, "listen", ln.Addr().String(), "tenants", names)

	failed := make(chan error, 4+3*len(a.tenants))
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

	rulesCtx, stopRules := context.WithCancel(context.Background())
	defer stopRules()
	var fwdDone, pollDone, rulesDone []<-chan struct{}
	for _, t := range a.tenants {
		fwdDone = append(fwdDone, start("forward "+t.name, fwdCtx, t.fwd.Run))
		pollDone = append(pollDone, start("auth0poll "+t.name, pollCtx, t.poll))
		rulesDone = append(rulesDone, start("thresholds "+t.name, rulesCtx, t.rules.Run))
	}
	bgDone := start("maintenance", bgCtx, a.maintain)
	progressDone := start("progress", bgCtx, status.NewProgress(a.reg, a.logger, nil, 0).Run)
	go a.drainReload(bgCtx, reload)
	if a.trail != nil {
		go func() { _ = a.flushAudit(bgCtx) }()
	}

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
	if !waitAll(pollDone, deadline) {
		a.logger.Warn("poller did not stop in time; its last page is fetched again after restart")
	}
	stopRules()
	stopBg()
	stopFwd()
	if !waitAll(fwdDone, deadline) {
		a.logger.Warn("forwarder did not drain in time; unacknowledged events stay pending and are delivered after restart (Segment drops the duplicates)")
	}
	waitUntil(bgDone, deadline)
	waitUntil(progressDone, deadline)
	waitAll(rulesDone, deadline)
	a.backfill.stop()
	// The HTTP server stops before Redis closes: an admin request in
	// flight still has its audit stream, and the trail writes what it kept.
	shutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	a.closeTrail()
	a.close()
	a.logger.Info("authpipe stopped")
	return runErr
}

// waitAll waits for every channel to close, until deadline.
func waitAll(done []<-chan struct{}, deadline time.Time) bool {
	ok := true
	for _, d := range done {
		ok = waitUntil(d, deadline) && ok
	}
	return ok
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

// maintain keeps readiness current, looks for lost buffer data, checks
// Redis' settings and trims the buffers.
func (a *app) maintain(ctx context.Context) error {
	for _, t := range a.tenants {
		if err := t.buf.EnsureGroup(ctx, forwardGroup); err != nil && ctx.Err() == nil {
			a.logger.Warn("create consumer group", "tenant", t.name, "err", err)
		}
	}
	probe := time.NewTicker(2 * time.Second)
	defer probe.Stop()
	trim := time.NewTicker(time.Minute)
	defer trim.Stop()
	safety := time.NewTicker(safetyEvery)
	defer safety.Stop()
	a.probe(ctx)
	a.checkLoss(ctx)
	a.checkSafety(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-probe.C:
			a.probe(ctx)
			a.checkLoss(ctx)
			if a.safety != nil && !a.safety.Checked() {
				a.checkSafety(ctx) // Redis did not answer before
			}
		case <-safety.C:
			a.checkSafety(ctx)
		case <-trim.C:
			for _, t := range a.tenants {
				n, err := t.buf.Trim(ctx)
				if err != nil {
					if ctx.Err() == nil {
						a.rep.Fail(ctx, "trim buffer "+t.name, slog.LevelWarn, "trim buffer", err, "tenant", t.name)
					}
					continue
				}
				a.rep.OK(ctx, "trim buffer "+t.name)
				if n > 0 {
					a.logger.Debug("trimmed buffer", "tenant", t.name, "entries", n)
				}
			}
		}
	}
}

// checkLoss looks for lost data in every tenant's buffer (CheckLoss). A
// failure is Redis not answering, which the probe reports.
func (a *app) checkLoss(ctx context.Context) {
	for _, t := range a.tenants {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := t.buf.CheckLoss(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.logger.Debug("look for lost buffer data", "tenant", t.name, "err", err)
		}
	}
}

// checkSafety checks Redis' persistence and eviction settings.
func (a *app) checkSafety(ctx context.Context) {
	if a.safety == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := a.safety.Check(cctx); err != nil {
		if ctx.Err() == nil {
			a.rep.Fail(ctx, actCheckSafety, slog.LevelWarn, "check Redis persistence and eviction settings", err)
		}
		return
	}
	a.rep.OK(ctx, actCheckSafety)
}

// actCheckSafety keys the summarised failures of checkSafety.
const actCheckSafety = "check Redis settings"

// probe pings every tenant's buffer and sets readiness. An unreachable
// buffer is logged when it starts, summarised while it lasts and followed
// by one line when the buffer answers again.
func (a *app) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok := true
	for _, t := range a.tenants {
		key := "ping buffer " + t.name
		if err := t.buf.Ping(pctx); err != nil {
			ok = false
			if ctx.Err() == nil {
				a.rep.Fail(ctx, key, slog.LevelWarn, "buffer unreachable; /-/ready answers 503", err, "tenant", t.name, "buffer", a.bufferKind())
			}
			continue
		}
		if ep, was := a.rep.Clear(key); was {
			a.logger.Info("buffer reachable again", "component", "maintenance", "tenant", t.name, "buffer", a.bufferKind(),
				"failures", ep.Failures, "unreachable_for", ep.Duration.Round(time.Second).String())
		}
	}
	a.bufOK.Store(ok)
	if a.isReady() {
		a.ready.Set(1)
	} else {
		a.ready.Set(0)
	}
}

// bufferKind names the buffer backend in log lines.
func (a *app) bufferKind() string {
	if a.redis != nil {
		return "redis"
	}
	return "embedded"
}

func (a *app) isReady() bool {
	return !a.draining.Load() && a.bufOK.Load() && a.waitingForAuth0() == ""
}

// waitingForAuth0 returns the first tenant this replica polls whose Auth0
// has not answered yet, or "". A tenant another replica polls is ready.
func (a *app) waitingForAuth0() string {
	for _, t := range a.tenants {
		if !t.ready() {
			return t.name
		}
	}
	return ""
}

func (a *app) drainReload(ctx context.Context, reload <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			for _, t := range a.tenants {
				if err := t.rules.Reload(); err != nil {
					a.logger.Error("reload threshold rules; the previous rules stay in force", "tenant", t.name, "err", err)
				} else {
					a.logger.Info("threshold rules reloaded", "tenant", t.name)
				}
			}
		}
	}
}

// listen builds the HTTP server on AUTHPIPE_LISTEN: the mux (status page,
// metrics, probes, profiles), behind admin.Front, which routes /api/ to the
// admin API and audits every refusal before the mux, with the timeouts and
// bounds of config.HTTP.
func (a *app) listen() (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	mux.Handle("/", status.NewHandler(a.reg, status.Options{Retention: a.cfg.Auth0.LogRetention}))
	mux.Handle("/metrics", getOnly(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg})))
	mux.Handle("/-/healthy", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "authpipe is healthy")
	})))
	mux.Handle("/-/ready", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case a.draining.Load():
			http.Error(w, "authpipe is shutting down", http.StatusServiceUnavailable)
		case !a.bufOK.Load():
			http.Error(w, "authpipe is not ready: the buffer has not answered", http.StatusServiceUnavailable)
		case a.waitingForAuth0() != "":
			http.Error(w, "authpipe is not ready: Auth0 has not answered (tenant "+a.waitingForAuth0()+")", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "authpipe is ready")
		}
	})))
	if a.cfg.Pprof {
		// The handlers net/http/pprof registers on http.DefaultServeMux,
		// mounted on this mux only when asked for (AUTHPIPE_PPROF).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	api, err := a.adminHandler()
	if err != nil {
		return nil, nil, err
	}
	front := admin.NewFront(mux, api, admin.FrontConfig{MaxBodyBytes: a.cfg.HTTP.MaxBodyBytes})
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		a.closeTrail()
		return nil, nil, fmt.Errorf("listen on AUTHPIPE_LISTEN %s: %w", a.cfg.Listen, err)
	}
	return newHTTPServer(a.cfg.HTTP, front, a.logger), front.Listener(ln), nil
}

// newHTTPServer is the worker's HTTP server: every timeout and bound of
// config.HTTP set, net/http's own messages in the JSON log, and front's
// hooks, which audit the answers net/http writes itself (431 …). Serve it
// on front.Listener.
func newHTTPServer(c config.HTTP, front *admin.Front, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           front,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ConnState:         front.ConnState,
		ConnContext:       front.ConnContext,
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// getOnly serves GET and HEAD; other methods get 405.
func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed: GET or HEAD", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}
