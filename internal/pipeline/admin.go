package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/thresholds"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// auditFlushInterval is how often the worker retries the audit entries a
// failing sink keeps.
const auditFlushInterval = 5 * time.Second

// adminHandler builds the admin API (package admin) over the app's tenants
// when it is configured (AUTHPIPE_ADMIN_AUDIENCE or
// AUTHPIPE_ADMIN_STATIC_TOKEN), else returns nil. It opens the audit trail
// (a.trail), which Run closes once the HTTP server has stopped.
func (a *App) adminHandler() (*admin.API, error) {
	cfg := a.cfg
	if !cfg.Admin.Enabled() {
		return nil, nil
	}
	tenants := make([]admin.Tenant, 0, len(a.tenants))
	var engines []*thresholds.Engine
	for _, t := range a.tenants {
		ab, ok := t.buf.(admin.Buffer)
		if !ok {
			return nil, fmt.Errorf("admin API: tenant %s: the buffer has no dead-letter operations", t.name)
		}
		tenants = append(tenants, admin.Tenant{Name: t.name, Buffer: ab})
		if t.rules != nil {
			engines = append(engines, t.rules)
		}
	}
	acfg := admin.Config{
		StaticToken: cfg.Admin.StaticToken,
		Secrets:     cfg.Secrets(),
		Group:       ForwardGroup,
		Retention:   cfg.Auth0.LogRetention,
	}
	if cfg.Admin.Audience != "" {
		acfg.Audience, acfg.Issuer, acfg.JWKSURL = cfg.Admin.Audience, cfg.AdminIssuer(), cfg.AdminJWKSURL()
	}
	src := admin.Sources{Tenants: tenants, Metrics: a.reg, Ready: a.isReady, Backfill: a.backfill}
	if len(engines) > 0 {
		src.Rules = ruleEngines(engines)
	}

	trail, err := OpenTrail(cfg, a.store.Redis, a.logger, a.reg, nil)
	if err != nil {
		return nil, err
	}
	api, err := admin.New(acfg, src, admin.Deps{Logger: a.logger, Registerer: a.reg, Trail: trail})
	if err != nil {
		a.closeTrailOf(trail)
		return nil, err
	}
	a.trail = trail
	stream := ""
	if a.store.Redis != nil {
		stream = audit.DefaultKeys.Stream
	} else {
		a.logger.Info("admin audit entries go to the audit log only: the embedded buffer keeps no audit stream")
	}
	a.logger.Info("admin API enabled", "prefix", admin.Prefix, "jwt", acfg.JWT(),
		"static_token", cfg.Admin.StaticToken != "", "audit_log", cfg.Admin.AuditLog, "audit_stream", stream)
	return api, nil
}

// OpenTrail opens the audit trail the configuration names: the audit log
// (AUTHPIPE_ADMIN_AUDIT_LOG: a file, or standard output) and, with Redis,
// the deployment's audit stream (audit.DefaultKeys). A command line
// (stderr not nil) writes to the file and the stream; standard output is
// its result, so when the audit log is stdout it leaves it out, or,
// without Redis, writes its entries to stderr.
func OpenTrail(cfg *config.Config, rdb redis.UniversalClient, logger *slog.Logger, reg prometheus.Registerer, stderr io.Writer) (*audit.Trail, error) {
	var sinks []audit.Sink
	cli := stderr != nil
	switch spec := cfg.Admin.AuditLog; {
	case spec != "" && spec != "stdout":
		s, err := audit.NewFileSink(spec)
		if err != nil {
			return nil, fmt.Errorf("AUTHPIPE_ADMIN_AUDIT_LOG: %w", err)
		}
		sinks = append(sinks, s)
	case !cli:
		sinks = append(sinks, audit.NewWriterSink(os.Stdout))
	case rdb == nil:
		sinks = append(sinks, audit.NewWriterSink(stderr))
	}
	if rdb != nil {
		sinks = append(sinks, audit.NewRedisSink(rdb, audit.DefaultKeys, cfg.Admin.AuditRetention, nil))
	}
	return audit.NewTrail(sinks, audit.Deps{Logger: logger, Registerer: reg, Host: audit.Hostname()})
}

// flushAudit retries, until ctx ends, the entries a failing audit sink
// keeps, so that they are written soon after it works again.
func (a *App) flushAudit(ctx context.Context) error {
	t := time.NewTicker(auditFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.trail.Flush(ctx)
		}
	}
}

// closeTrail writes what the audit trail still holds, if it can.
func (a *App) closeTrail() {
	if a.trail != nil {
		a.closeTrailOf(a.trail)
	}
}

func (a *App) closeTrailOf(t *audit.Trail) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	t.Close(ctx)
}

// ruleEngines is the admin API's view of the tenants' threshold engines:
// they share the rule files, so the rules are the first engine's, a reload
// reloads every engine, and this replica leads if it leads any.
type ruleEngines []*thresholds.Engine

func (r ruleEngines) Rules() *rules.Set { return r[0].Rules() }

func (r ruleEngines) Leader() bool { return slices.ContainsFunc(r, (*thresholds.Engine).Leader) }

func (r ruleEngines) Reload() error {
	var first error
	for _, e := range r {
		if err := e.Reload(); err != nil && first == nil {
			first = err // the same files: the first error says it
		}
	}
	return first
}
