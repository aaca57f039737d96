package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/logrepeat"
	"github.com/authpipe/authpipe/internal/status"
)

// Deps are what the app takes from its caller.
type Deps struct {
	Logger *slog.Logger
	// Registry takes every metric and is served on /metrics; nil: a new
	// one. The caller registers process-wide collectors (Go runtime,
	// build info) on it.
	Registry *prometheus.Registry
	// Version is named in the line logged at start.
	Version string
}

// App is one running worker: every configured tenant's pipeline, the
// maintenance loop, the backfill jobs, the admin API and the HTTP server,
// and the state its probes report. Build it with New, run it once with
// Run.
type App struct {
	cfg     *config.Config
	logger  *slog.Logger
	reg     *prometheus.Registry
	version string

	rules    RulesSource           // the threshold rules of every tenant
	store    *Store                // the buffers and the Redis client they share
	safety   *buffer.SafetyWatch   // Redis' persistence and eviction settings; nil with the embedded buffer
	tenants  []*tenant             // one per configured tenant (config.AllTenants)
	backfill *backfiller           // the admin API's Backfiller
	trail    *audit.Trail          // the admin API's audit trail; nil when the API is off
	stream   *auth0stream.Receiver // the Log Streams receiver; nil when AUTHPIPE_STREAM_LISTEN is unset

	bufOK    atomic.Bool
	draining atomic.Bool
	ready    prometheus.Gauge

	rep       *logrepeat.Summarizer // the maintenance loop's repeated errors
	closeOnce sync.Once
}

// New builds the app of cfg (the whole configuration, validated): opens
// every tenant's buffer and builds its components. It starts nothing;
// what it opened is closed by Run, or by Close when Run is not called.
func New(cfg *config.Config, deps Deps) (*App, error) {
	inject.Defaults(&deps.Logger, nil, nil)
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	logger, reg := deps.Logger, deps.Registry
	f := promauto.With(reg)
	a := &App{
		cfg:     cfg,
		logger:  logger,
		reg:     reg,
		version: deps.Version,
		rep:     logrepeat.New(logger.With("component", "maintenance"), nil, 0),
		ready: f.NewGauge(prometheus.GaugeOpts{
			Name: "authpipe_ready",
			Help: "1 when Redis and Auth0 have answered and the worker is not shutting down.",
		}),
	}

	var err error
	if a.rules, err = ResolveRules(cfg.RulesPath); err != nil {
		return nil, err
	}
	if a.rules.BuiltIn() {
		logger.Info("threshold rules: AUTHPIPE_RULES is unset and alerts/thresholds.yml is absent; using the shipped rules built into the binary",
			"rules", a.rules.Path)
	} else {
		logger.Info("threshold rules", "rules", a.rules.Path)
	}
	if a.store, err = OpenStore(cfg, logger, reg); err != nil {
		return nil, err
	}
	if a.store.Redis != nil {
		a.safety = buffer.NewSafetyWatch(a.store.Redis, logger, reg)
	}
	// Segment is the application's neighbour, not a tenant's: one request
	// family for every tenant's forwarder, without the tenant label.
	segment, err := forward.NewRequests(reg)
	if err != nil {
		a.Close()
		return nil, err
	}
	for _, tc := range cfg.AllTenants() {
		t, err := newTenant(cfg.ForTenant(tc), a.store, a.rules, segment, logger)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("tenant %s: %w", tc.Name, err)
		}
		a.tenants = append(a.tenants, t)
	}
	if err := a.newStream(); err != nil {
		a.Close()
		return nil, err
	}
	a.backfill = newBackfiller(a.tenants, logger)
	return a, nil
}

// Close closes the audit trail, every tenant's buffer and the Redis client.
// Run calls it when every component has stopped; call it only for an app
// that is not run. Later calls do nothing.
func (a *App) Close() {
	a.closeOnce.Do(func() {
		a.closeTrail()
		if err := a.store.Close(); err != nil {
			a.logger.Warn("close buffers", "err", err)
		}
	})
}

// Run runs the app until ctx ends or a component fails, then stops it in
// the delivery contract's order (see the package doc) and closes it. A
// signal on hup (SIGHUP; nil: none) reloads the threshold rules. Run
// returns nil after a stop that ctx asked for, else the first error.
func (a *App) Run(ctx context.Context, hup <-chan os.Signal) error {
	defer a.Close()
	if err := a.requireSafeRedis(ctx); err != nil {
		return err
	}
	srv, ln, err := a.listen()
	if err != nil {
		return err
	}
	streamSrv, streamLn, err := a.listenStream()
	if err != nil {
		_ = ln.Close()
		return err
	}
	names := make([]string, len(a.tenants))
	for i, t := range a.tenants {
		names[i] = t.name
	}
	started := []any{"version", a.version, "listen", ln.Addr().String(), "tenants", names}
	if streamLn != nil {
		started = append(started, "stream_listen", streamLn.Addr().String())
	}
	a.logger.Info("authpipe started", started...)

	sd := newShutdown(a.cfg.ShutdownTimeout, a.logger)
	defer sd.release()
	var g run.Group
	sd.trigger(&g, ctx, func(cause error) {
		// Readiness drops before anything stops: a load balancer stops
		// sending while the worker still answers.
		a.draining.Store(true)
		a.setReady()
		if cause != nil {
			a.logger.Error("component failed; shutting down", "err", cause)
		} else {
			a.logger.Info("shutdown requested")
		}
	})
	// Each stage stops only once the stages above it have stopped.
	reloads := make(chan struct{}, 1) // SIGHUPs during a reload collapse into one
	sd.stage(&g,
		actor{name: "signals", run: func(ctx context.Context) error { return forwardSignals(ctx, hup, reloads) }},
		actor{name: "reload", run: func(ctx context.Context) error { return a.reloadRules(ctx, reloads) }},
	)
	inputs := a.inputs()
	if streamSrv != nil {
		// An input like the pollers: it stops answering (what it did not
		// answer 200 Auth0 pushes again) before the forwarders drain.
		inputs = append(inputs, actor{name: "stream receiver", run: serveHTTP(streamSrv, streamLn, sd.deadline),
			late: "Log Streams receiver did not stop in time; requests not answered 200 are pushed again by Auth0"})
	}
	sd.stage(&g, inputs...)
	var engines, forwarders []actor
	for _, t := range a.tenants {
		engines = append(engines, actor{name: "thresholds " + t.name, run: t.rules.Run,
			late: "threshold engine did not stop in time"})
		forwarders = append(forwarders, actor{name: "forward " + t.name, run: t.fwd.Run,
			late: "forwarder did not drain in time; unacknowledged events stay pending and are delivered after restart (Segment drops the duplicates)"})
	}
	sd.stage(&g, engines...)
	sd.stage(&g, forwarders...)
	background := []actor{
		{name: "maintenance", run: a.maintain, late: "maintenance loop did not stop in time"},
		{name: "progress", run: status.NewProgress(a.reg, a.logger, nil, 0).Run, late: "progress reports did not stop in time"},
	}
	if a.trail != nil {
		background = append(background, actor{name: "audit flush", run: a.flushAudit, late: "audit flush did not stop in time"})
	}
	sd.stage(&g, background...)
	// The HTTP server stops after the forwarders have drained (the status
	// page and /metrics show the drain) and before the buffers close (an
	// admin request in flight still has its buffer and audit stream).
	sd.stage(&g, actor{name: "http server", run: serveHTTP(srv, ln, sd.deadline),
		late: "HTTP server did not stop in time"})

	err = g.Run()
	if sd.leftBehind() {
		a.logger.Warn("shutdown timed out: closing the buffers with components still running; what was not acknowledged is delivered after restart (Segment drops the duplicates)",
			"shutdown_timeout", a.cfg.ShutdownTimeout.String())
	}
	a.Close()
	a.logger.Info("authpipe stopped")
	return err
}

// inputs are the actors that write into the buffers, stopped first: each
// tenant's poller (releasing its lease) and the backfill jobs; Run adds
// the Log Streams receiver's listener (serveHTTP), so that it stops
// answering before the forwarders drain.
func (a *App) inputs() []actor {
	var in []actor
	for _, t := range a.tenants {
		in = append(in, actor{name: "auth0poll " + t.name, run: t.poll,
			late: "poller did not stop in time; its last page is fetched again after restart"})
	}
	return append(in, actor{name: "backfill", run: a.backfill.Run,
		late: "backfill did not stop in time; run it again after restart (the buffer's dedupe absorbs what it wrote)"})
}

// forwardSignals turns each signal on hup into a reload request, until ctx
// ends. A request waiting already absorbs the new one.
func forwardSignals(ctx context.Context, hup <-chan os.Signal, reloads chan<- struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			select {
			case reloads <- struct{}{}:
			default:
			}
		}
	}
}

// reloadRules reloads every tenant's threshold rules on each request,
// until ctx ends.
func (a *App) reloadRules(ctx context.Context, reloads <-chan struct{}) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reloads:
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

// setReady sets authpipe_ready from isReady.
func (a *App) setReady() {
	if a.isReady() {
		a.ready.Set(1)
	} else {
		a.ready.Set(0)
	}
}

func (a *App) isReady() bool {
	return !a.draining.Load() && a.bufOK.Load() && a.waitingForAuth0() == ""
}

// waitingForAuth0 returns the first tenant this replica polls whose Auth0
// has not answered yet, or "". A tenant another replica polls is ready.
func (a *App) waitingForAuth0() string {
	for _, t := range a.tenants {
		if !t.ready() {
			return t.name
		}
	}
	return ""
}
