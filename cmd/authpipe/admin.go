package main

import (
	"fmt"
	"net/http"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/thresholds"
)

// adminHandler builds the admin API (package admin) over the app's tenants
// when it is configured (AUTHPIPE_ADMIN_AUDIENCE or
// AUTHPIPE_ADMIN_STATIC_TOKEN), else returns a nil handler. It opens the
// audit log; the returned function closes it.
func (a *app) adminHandler() (http.Handler, func() error, error) {
	noop := func() error { return nil }
	cfg := a.cfg
	if !cfg.Admin.Enabled() {
		return nil, noop, nil
	}
	tenants := make([]admin.Tenant, 0, len(a.tenants))
	var engines []*thresholds.Engine
	for _, t := range a.tenants {
		ab, ok := t.buf.(admin.Buffer)
		if !ok {
			return nil, noop, fmt.Errorf("admin API: tenant %s: the buffer has no dead-letter operations", t.name)
		}
		tenants = append(tenants, admin.Tenant{Name: t.name, Buffer: ab})
		if t.rules != nil {
			engines = append(engines, t.rules)
		}
	}
	acfg := admin.Config{
		StaticToken:    cfg.Admin.StaticToken,
		AuditRetention: cfg.Admin.AuditRetention,
		Group:          forwardGroup,
		Retention:      cfg.Auth0.LogRetention,
	}
	if cfg.Admin.Audience != "" {
		acfg.Audience, acfg.Issuer, acfg.JWKSURL = cfg.Admin.Audience, cfg.AdminIssuer(), cfg.AdminJWKSURL()
	}
	src := admin.Sources{Tenants: tenants, Metrics: a.reg, Ready: a.isReady}
	if len(engines) > 0 {
		src.Rules = ruleEngines(engines)
	}
	if a.backfill != nil {
		src.Backfill = a.backfill
	}

	sink, closeSink, err := admin.OpenAuditSink(cfg.Admin.AuditLog)
	if err != nil {
		return nil, noop, fmt.Errorf("AUTHPIPE_ADMIN_AUDIT_LOG: %w", err)
	}
	deps := admin.Deps{Logger: a.logger, Registerer: a.reg, AuditSink: sink}
	if rb, ok := a.tenants[0].buf.(*buffer.Redis); ok && a.redis != nil {
		acfg.AuditStream, deps.Redis = rb.Key("audit"), a.redis
	} else {
		a.logger.Info("admin audit entries go to the audit log only: the embedded buffer keeps no audit stream")
	}
	api, err := admin.New(acfg, src, deps)
	if err != nil {
		_ = closeSink()
		return nil, noop, err
	}
	a.logger.Info("admin API enabled", "prefix", admin.Prefix, "jwt", acfg.JWT(),
		"static_token", cfg.Admin.StaticToken != "", "audit_log", cfg.Admin.AuditLog, "audit_stream", acfg.AuditStream)
	return api, closeSink, nil
}

// ruleEngines is the admin API's view of the tenants' threshold engines:
// they share the rule files, so the rules are the first engine's, a reload
// reloads every engine, and this replica leads if it leads any.
type ruleEngines []*thresholds.Engine

func (r ruleEngines) Rules() *thresholds.RuleSet { return r[0].Rules() }

func (r ruleEngines) Leader() bool {
	for _, e := range r {
		if e.Leader() {
			return true
		}
	}
	return false
}

func (r ruleEngines) Reload() error {
	var errs []error
	for _, e := range r {
		if err := e.Reload(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0] // the same files: the first error says it
	}
	return nil
}
