package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/buffer"
)

// How often the maintenance loop does each of its jobs.
const (
	// probeEvery: readiness, and the look for lost buffer data.
	probeEvery = 2 * time.Second
	// trimEvery: acknowledged entries leave the buffer (see buffer.TrimInterval).
	trimEvery = buffer.TrimInterval
	// safetyEvery: Redis' settings are checked again, since a fail-over
	// or a CONFIG SET can change them while authpipe runs.
	safetyEvery = 5 * time.Minute
)

// actCheckSafety keys the summarised failures of checkSafety.
const actCheckSafety = "check Redis settings"

// requireSafeRedis refuses to start, when AUTHPIPE_REQUIRE_SAFE_REDIS is
// set, on a Redis whose settings can lose the buffer. It waits for Redis to
// answer (the check must be made before anything starts); a Redis that
// refuses CONFIG is unknown, not unsafe, and is accepted.
func (a *App) requireSafeRedis(ctx context.Context) error {
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

// maintain keeps readiness current, looks for lost buffer data, checks
// Redis' settings and trims the buffers, until ctx ends.
func (a *App) maintain(ctx context.Context) error {
	for _, t := range a.tenants {
		if err := t.buf.EnsureGroup(ctx, ForwardGroup); err != nil && ctx.Err() == nil {
			a.logger.Warn("create consumer group", "tenant", t.name, "err", err)
		}
	}
	probe := time.NewTicker(probeEvery)
	defer probe.Stop()
	trim := time.NewTicker(trimEvery)
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
			a.trim(ctx)
		}
	}
}

// trim trims every tenant's buffer (Buffer.Trim: never past what a group
// has still to deliver).
func (a *App) trim(ctx context.Context) {
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

// checkLoss looks for lost data in every tenant's buffer (CheckLoss). A
// failure is Redis not answering, which the probe reports.
func (a *App) checkLoss(ctx context.Context) {
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
func (a *App) checkSafety(ctx context.Context) {
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

// probe pings every tenant's buffer and sets readiness. An unreachable
// buffer is logged when it starts, summarised while it lasts and followed
// by one line when the buffer answers again.
func (a *App) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ok := true
	for _, t := range a.tenants {
		key := "ping buffer " + t.name
		if err := t.buf.Ping(pctx); err != nil {
			ok = false
			if ctx.Err() == nil {
				a.rep.Fail(ctx, key, slog.LevelWarn, "buffer unreachable; /-/ready answers 503", err, "tenant", t.name, "buffer", a.store.Kind())
			}
			continue
		}
		if ep, was := a.rep.Clear(key); was {
			a.logger.Info("buffer reachable again", "component", "maintenance", "tenant", t.name, "buffer", a.store.Kind(),
				"failures", ep.Failures, "unreachable_for", ep.Duration.Round(time.Second).String())
		}
	}
	a.bufOK.Store(ok)
	a.setReady()
}
