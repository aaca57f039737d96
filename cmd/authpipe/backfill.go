package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
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
	st, err := pipeline.OpenStore(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer func() {
		if err := st.Close(); err != nil {
			logger.Warn("close buffers", "err", err)
		}
	}()

	// The window and tenants are recorded before anything is polled; the
	// result, with the events added, after.
	au, err := newCLIAudit(cfg, st.Redis, logger, stderr, "authpipe backfill", fs, admin.OpBackfillStart, "backfill")
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
	exit := runBackfill(ctx, cfg, st, tenants, since, until, &added, stdout, stderr)
	au.after(ctx, exit, &added)
	return exit
}

// runBackfill backfills each tenant in turn, adding the events new to
// the buffers to *added, and returns the exit status.
func runBackfill(ctx context.Context, cfg *config.Config, st *pipeline.Store, tenants []config.Tenant, since, until time.Time, added *int, stdout, stderr io.Writer) int {
	failed := false
	for _, tenant := range tenants {
		tc := cfg.ForTenant(tenant)
		buf, err := st.Buffer(tc)
		if err != nil {
			fmt.Fprintf(stderr, "authpipe backfill: tenant %s: %v\n", tenant.Name, err)
			return 1
		}
		// Backfill only: the poll loop never runs, so no lease is needed.
		p, err := st.NewPoller(tc, buf, nil)
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
