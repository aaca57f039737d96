package main

import (
	"context"
	"fmt"
	"time"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/thresholds"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// adminHandler builds the admin API (package admin) over the app's tenants
// when it is configured (AUTHPIPE_ADMIN_AUDIENCE or
// AUTHPIPE_ADMIN_STATIC_TOKEN), else returns nil. It opens the audit trail
// (a.trail), which a.closeTrail closes.
func (a *app) adminHandler() (*admin.API, error) {
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
		Group:       forwardGroup,
		Retention:   cfg.Auth0.LogRetention,
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

	trail, err := openTrail(cfg, a.redis, a.logger, a.reg, nil)
	if err != nil {
		return nil, err
	}
	api, err := admin.New(acfg, src, admin.Deps{Logger: a.logger, Registerer: a.reg, Trail: trail})
	if err != nil {
		return nil, err
	}
	a.trail = trail
	stream := ""
	if a.redis != nil {
		stream = audit.DefaultKeys.Stream
	} else {
		a.logger.Info("admin audit entries go to the audit log only: the embedded buffer keeps no audit stream")
	}
	a.logger.Info("admin API enabled", "prefix", admin.Prefix, "jwt", acfg.JWT(),
		"static_token", cfg.Admin.StaticToken != "", "audit_log", cfg.Admin.AuditLog, "audit_stream", stream)
	return api, nil
}

// closeTrail writes what the audit trail still holds, if it can.
func (a *app) closeTrail() {
	if a.trail == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a.trail.Close(ctx)
}

// ruleEngines is the admin API's view of the tenants' threshold engines:
// they share the rule files, so the rules are the first engine's, a reload
// reloads every engine, and this replica leads if it leads any.
type ruleEngines []*thresholds.Engine

func (r ruleEngines) Rules() *rules.Set { return r[0].Rules() }

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
