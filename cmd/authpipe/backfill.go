package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/metrics"
)

const backfillUsage = `Usage: authpipe backfill --since TIME [--until TIME] [--tenant NAME]

Polls a window of Auth0's logs again into the buffer, with the configuration
of authpipe run (environment and AUTHPIPE_CONFIG). The tenant's checkpoint
does not move and the buffer's dedupe by log_id absorbs what is buffered
already, so it is safe to run while authpipe run works, and to run twice;
the running worker forwards what is new. Use it after an outage of part of
the pipeline, or when a checkpoint was set ahead by hand.

TIME is an RFC 3339 time (2026-01-02T15:04:05Z), a UTC date (2026-01-02), or
a duration meaning that long ago (36h). --since must lie within the tenant's
AUTH0_LOG_RETENTION: Auth0 has deleted older logs. --until defaults to now.
Without --tenant every configured tenant is backfilled.

With the embedded buffer (no REDIS_URL) stop authpipe run first, or use the
admin API's backfill: the buffer's data dir is locked by the running worker.
`

// backfillCommand runs `authpipe backfill`.
func backfillCommand(args []string, stdout, stderr io.Writer) int {
	if wantsHelp(args) {
		fmt.Fprint(stdout, backfillUsage)
		return 0
	}
	fs := flag.NewFlagSet("authpipe backfill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backfillUsage) }
	sinceArg := fs.String("since", "", "start of the window (required)")
	untilArg := fs.String("until", "", "end of the window (default: now)")
	only := fs.String("tenant", "", "backfill only this tenant")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "authpipe backfill: unexpected arguments %q\n\n%s", fs.Args(), backfillUsage)
		return 2
	}
	now := time.Now()
	if *sinceArg == "" {
		fmt.Fprint(stderr, "authpipe backfill: --since is required\n\n"+backfillUsage)
		return 2
	}
	since, err := parseBackfillTime(*sinceArg, now)
	if err != nil {
		fmt.Fprintf(stderr, "authpipe backfill: --since: %v\n", err)
		return 2
	}
	var until time.Time
	if *untilArg != "" {
		if until, err = parseBackfillTime(*untilArg, now); err != nil {
			fmt.Fprintf(stderr, "authpipe backfill: --until: %v\n", err)
			return 2
		}
	}
	if !until.IsZero() && !since.Before(until) {
		fmt.Fprintf(stderr, "authpipe backfill: --since %s is not before --until %s\n", since.Format(time.RFC3339), until.Format(time.RFC3339))
		return 2
	}
	if since.After(now) {
		fmt.Fprintf(stderr, "authpipe backfill: --since %s is in the future\n", since.Format(time.RFC3339))
		return 2
	}

	cfg, err := config.Load(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	var tenants []config.Tenant
	for _, t := range cfg.AllTenants() {
		if *only == "" || t.Name == *only {
			tenants = append(tenants, t)
		}
	}
	if len(tenants) == 0 {
		fmt.Fprintf(stderr, "authpipe backfill: --tenant %q is not a configured tenant\n", *only)
		return 2
	}
	for _, t := range tenants {
		if horizon := now.Add(-t.Auth0.LogRetention); since.Before(horizon.Add(-time.Minute)) {
			fmt.Fprintf(stderr, "authpipe backfill: --since %s is older than tenant %s's log retention (AUTH0_LOG_RETENTION %s): Auth0 keeps nothing before %s\n",
				since.Format(time.RFC3339), t.Name, t.Auth0.LogRetention, horizon.UTC().Format(time.RFC3339))
			return 2
		}
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	slog.SetDefault(logger) // go-redis' lines too (see runCommand)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The components of authpipe run that a backfill needs: each tenant's
	// buffer and poller, on a registry of their own.
	a := &app{cfg: cfg, logger: logger, reg: prometheus.NewRegistry()}
	if err := a.openRedis(); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer a.close()

	// The window and tenants are recorded before anything is polled; the
	// result, with the events added, after.
	au, err := newCLIAudit(cfg, a.redis, logger, stderr, "authpipe backfill", fs, admin.OpBackfillStart, "backfill")
	if err != nil {
		fmt.Fprintf(stderr, "authpipe backfill: %v\n", err)
		return 1
	}
	defer au.close(ctx)
	au.entry.Window = &audit.Window{Since: since.UTC()}
	if !until.IsZero() {
		u := until.UTC()
		au.entry.Window.Until = &u
	}
	for _, t := range tenants {
		au.entry.Tenants = append(au.entry.Tenants, t.Name)
	}
	if err := au.before(ctx); err != nil {
		fmt.Fprintf(stderr, "authpipe backfill: %v\n", err)
		return 1
	}
	added := 0
	exit := runBackfill(ctx, a, tenants, since, until, &added, stdout, stderr)
	au.after(ctx, exit, &added)
	return exit
}

// runBackfill backfills each tenant in turn, adding the events new to
// the buffers to *added, and returns the exit status.
func runBackfill(ctx context.Context, a *app, tenants []config.Tenant, since, until time.Time, added *int, stdout, stderr io.Writer) int {
	cfg, logger := a.cfg, a.logger
	stages := metrics.NewStages(a.reg)
	failed := false
	for _, tenant := range tenants {
		tc := cfg.ForTenant(tenant)
		t := &tenantPipeline{name: tenant.Name, cfg: tc, logger: logger}
		if err := a.openBuffer(t, stages); err != nil {
			fmt.Fprintf(stderr, "authpipe backfill: tenant %s: %v\n", tenant.Name, err)
			return 1
		}
		a.tenants = append(a.tenants, t)
		p, err := newBackfillPoller(tc, t.buf, logger, a.reg, stages)
		if err != nil {
			fmt.Fprintf(stderr, "authpipe backfill: tenant %s: %v\n", tenant.Name, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: backfilling %s to %s\n", tenant.Name, since.UTC().Format(time.RFC3339), untilText(until))
		last := time.Time{}
		res, err := p.Backfill(ctx, since, until, func(r auth0poll.BackfillResult) {
			if r.Done || time.Since(last) >= time.Second {
				last = time.Now()
				fmt.Fprintf(stdout, "%s: %d pages, %d logs fetched, %d new, up to %s\n",
					tenant.Name, r.Pages, r.Fetched, r.Added, r.Position.Format(time.RFC3339))
			}
		})
		*added += res.Added
		if err != nil {
			fmt.Fprintf(stderr, "authpipe backfill: tenant %s: %v (after %d logs fetched, %d new; running it again is safe)\n",
				tenant.Name, err, res.Fetched, res.Added)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		fmt.Fprintf(stdout, "%s: done: %d logs in the window, %d new to the buffer, %d buffered already\n",
			tenant.Name, res.Fetched, res.Added, res.Fetched-res.Added)
	}
	if failed {
		return 1
	}
	return 0
}

func untilText(until time.Time) string {
	if until.IsZero() {
		return "now"
	}
	return until.UTC().Format(time.RFC3339)
}

// parseBackfillTime reads an RFC 3339 time, a UTC date, or a duration ago.
func parseBackfillTime(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want e.g. 2026-01-02T15:04:05Z, 2026-01-02 or 36h for 36 hours ago)", v)
}

// newBackfillPoller builds a tenant's poller as authpipe run does, for
// Backfill only (it never runs the poll loop, so it needs no lease).
func newBackfillPoller(cfg *config.Config, buf auth0poll.Buffer, logger *slog.Logger, reg prometheus.Registerer, stages *metrics.Stages) (*auth0poll.Poller, error) {
	return auth0poll.New(pollerConfig(cfg), buf, auth0poll.Deps{Logger: logger, Registerer: reg, Stages: stages})
}

// backfiller is the admin API's Backfiller: it backfills every tenant of
// this worker in turn, through the tenants' running pollers (same client
// and rate-limit pacing), one backfill at a time.
type backfiller struct {
	tenants []*tenantPipeline
	log     *slog.Logger

	mu     sync.Mutex
	status admin.BackfillStatus
	cancel context.CancelFunc
	done   chan struct{}
}

var _ admin.Backfiller = (*backfiller)(nil)

func newBackfiller(tenants []*tenantPipeline, log *slog.Logger) *backfiller {
	return &backfiller{tenants: tenants, log: log, status: admin.BackfillStatus{State: "idle"}}
}

// Start begins a backfill of [since, now) of every tenant in the
// background; it runs until done or the worker stops.
func (b *backfiller) Start(_ context.Context, since time.Time) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.status.State == "running" {
		return "", fmt.Errorf("backfill %s: %w", b.status.ID, admin.ErrBackfillRunning)
	}
	now := time.Now()
	for _, t := range b.tenants {
		if horizon := now.Add(-t.cfg.Auth0.LogRetention); since.Before(horizon.Add(-time.Minute)) {
			return "", fmt.Errorf("%w: since %s is older than tenant %s's log retention (%s): Auth0 keeps nothing before %s",
				admin.ErrBackfillInvalid, since.UTC().Format(time.RFC3339), t.name, t.cfg.Auth0.LogRetention, horizon.UTC().Format(time.RFC3339))
		}
	}
	var raw [6]byte
	_, _ = rand.Read(raw[:])
	id := "bf-" + hex.EncodeToString(raw[:])
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	b.status = admin.BackfillStatus{ID: id, State: "running", Since: since.UTC(), StartedAt: &now}
	b.log.Info("backfill started", "id", id, "since", since.UTC(), "tenants", len(b.tenants))
	go b.run(ctx, id, since, b.done)
	return id, nil
}

func (b *backfiller) run(ctx context.Context, id string, since time.Time, done chan struct{}) {
	defer close(done)
	var errs []error
	var base admin.BackfillStatus // totals of the tenants finished
	for _, t := range b.tenants {
		res, err := t.poller.Backfill(ctx, since, time.Time{}, func(r auth0poll.BackfillResult) {
			b.mu.Lock()
			b.status.Pages, b.status.Events, b.status.Added = base.Pages+int64(r.Pages), base.Events+int64(r.Fetched), base.Added+int64(r.Added)
			b.mu.Unlock()
		})
		base.Pages, base.Events, base.Added = base.Pages+int64(res.Pages), base.Events+int64(res.Fetched), base.Added+int64(res.Added)
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", t.name, err))
			if ctx.Err() != nil {
				break
			}
		}
	}
	finished := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.status.Pages, b.status.Events, b.status.Added = base.Pages, base.Events, base.Added
	b.status.FinishedAt = &finished
	b.status.State = "done"
	if err := errors.Join(errs...); err != nil {
		b.status.State, b.status.Error = "failed", err.Error()
		b.log.Warn("backfill failed", "id", id, "since", since.UTC(), "events", base.Events, "added", base.Added, "err", err)
		return
	}
	b.log.Info("backfill done", "id", id, "since", since.UTC(), "pages", base.Pages,
		"events", base.Events, "added", base.Added, "duplicates", base.Events-base.Added, "took", finished.Sub(*b.status.StartedAt).Round(time.Millisecond).String())
}

// Progress reports the current or last backfill.
func (b *backfiller) Progress() admin.BackfillStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	if s.StartedAt != nil {
		t := *s.StartedAt
		s.StartedAt = &t
	}
	if s.FinishedAt != nil {
		t := *s.FinishedAt
		s.FinishedAt = &t
	}
	return s
}

// stop cancels a running backfill and waits for it (before the buffers
// close); the part done stays buffered.
func (b *backfiller) stop() {
	b.mu.Lock()
	cancel, done := b.cancel, b.done
	b.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}
