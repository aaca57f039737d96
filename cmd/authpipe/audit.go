package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
)

// cliAudit records the audit entries of a command line that reads or
// changes data: the entries the admin API writes, with the OS user as sub
// (auth "os") and the host, written before anything is shown or changed.
// Every such command uses it: newCLIAudit, then read (a read) or before
// and after (a change), then close.
type cliAudit struct {
	trail *audit.Trail
	entry audit.Entry
	start time.Time
	name  string // "authpipe dlq drop", for messages
	acted bool
}

// newCLIAudit opens the trail of command (e.g. "authpipe dlq drop") with
// the flags it was given, for operation on resource. logger takes the
// trail's errors (the command's stderr).
func newCLIAudit(cfg *config.Config, rdb redis.UniversalClient, logger *slog.Logger, stderr io.Writer, command string, fs *flag.FlagSet, operation, resource string) (*cliAudit, error) {
	trail, err := pipeline.OpenTrail(cfg, rdb, logger, prometheus.NewRegistry(), stderr)
	if err != nil {
		return nil, err
	}
	mask := audit.NewMasker(config.Reveal(cfg.Secrets()...), tenantNames(cfg))
	flags := map[string][]string{}
	if fs != nil {
		fs.Visit(func(f *flag.Flag) { flags[f.Name] = []string{f.Value.String()} })
	}
	start := time.Now()
	return &cliAudit{
		trail: trail, start: start, name: command,
		entry: audit.Entry{
			ID: audit.NewID(), Kind: audit.KindRequest, Time: start.UTC(), Host: audit.Hostname(),
			Auth: audit.AuthOS, Sub: audit.OSUser(), ClaimsVerified: true, Method: audit.MethodCLI,
			Path: command, Query: mask.Values(flags), Operation: operation, Resource: resource,
			Outcome: audit.OutcomeAllowed,
		},
	}, nil
}

// errAuditRefused says a command did nothing because no sink took its
// entry.
var errAuditRefused = errors.New("the audit trail cannot be written, so nothing was done or shown")

// read stores the entry of a read, naming what it is about to show, with
// exit status 0; on an error nothing may be shown.
func (c *cliAudit) read(ctx context.Context) error {
	e := c.entry
	e.Status = audit.IntPtr(0)
	e.LatencySeconds = time.Since(c.start).Seconds()
	if err := c.trail.Record(ctx, audit.Split(e)...); err != nil {
		c.refused(ctx)
		return fmt.Errorf("%w: %w", errAuditRefused, err)
	}
	return nil
}

// before stores the request entry of a change before it acts; on an error
// nothing may be done.
func (c *cliAudit) before(ctx context.Context) error {
	e := c.entry
	e.Status, e.Affected = nil, nil // the result says
	e.LatencySeconds = time.Since(c.start).Seconds()
	if err := c.trail.Record(ctx, audit.Split(e)...); err != nil {
		c.refused(ctx)
		return fmt.Errorf("%w: %w", errAuditRefused, err)
	}
	c.acted = true
	return nil
}

// after records a change's result: its exit status and how many records
// changed (nil: unknown).
func (c *cliAudit) after(ctx context.Context, exit int, affected *int) {
	e := c.entry
	e.Kind, e.Part, e.Parts = audit.KindResult, 1, 1
	e.Records, e.Missing = nil, nil
	e.Status, e.Affected = audit.IntPtr(exit), affected
	e.LatencySeconds = time.Since(c.start).Seconds()
	c.trail.Defer(ctx, e)
}

// refused records that the command was refused, where a sink takes it.
func (c *cliAudit) refused(ctx context.Context) {
	e := c.entry
	e.Kind, e.Part, e.Parts = audit.KindRequest, 1, 1
	e.Outcome, e.Reason, e.Status = audit.OutcomeRefused, audit.ReasonUnavailable, audit.IntPtr(1)
	e.Records, e.Missing, e.Affected = nil, nil, nil
	c.trail.Defer(ctx, e)
}

// close writes what a failing sink kept, if it can; what it cannot is
// logged as lost.
func (c *cliAudit) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	c.trail.Close(ctx)
}
