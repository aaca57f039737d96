package thresholds

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// knownRule reports whether a rule called name is in force: the job
// monitor counts the runs of those only.
func (e *Engine) knownRule(name string) bool {
	_, ok := e.ev.rules.Load().Get(name)
	return ok
}

// schedule builds the scheduler of rule set rs, not started: a job per
// rule, on its every or cron, in singleton mode (a check still running
// skips the next), first run at start. It is all of a rule set that can
// still fail once the files have parsed; on any error nothing is left
// running.
func (e *Engine) schedule(rs *rules.Set) (gocron.Scheduler, error) {
	opts := []gocron.SchedulerOption{
		gocron.WithClock(e.clock),
		gocron.WithLocation(time.UTC),
		gocron.WithMonitor(jobMonitor{m: e.m, known: e.knownRule}),
		gocron.WithMonitorStatus(jobMonitor{m: e.m, known: e.knownRule}),
		gocron.WithStopTimeout(5 * time.Second),
	}
	if e.lease != nil {
		opts = append(opts, gocron.WithDistributedElector(e.lease.Elector()))
	}
	sched, err := gocron.NewScheduler(opts...)
	if err != nil {
		return nil, fmt.Errorf("create scheduler: %w", err)
	}
	for _, r := range rs.Rules {
		name := r.Name
		_, err := sched.NewJob(e.jobDef(r),
			gocron.NewTask(func(ctx context.Context) error { return e.runCheck(ctx, name) }),
			gocron.WithName(name),
			gocron.WithSingletonMode(gocron.LimitModeReschedule),
			gocron.WithStartAt(gocron.WithStartImmediately()),
		)
		if err != nil {
			_ = sched.Shutdown() // never started: only its goroutine to end
			return nil, fmt.Errorf("schedule rule %s: %w", name, err)
		}
	}
	return sched, nil
}

// jobDefinition is a rule's schedule as gocron takes it.
func jobDefinition(r *rules.Rule) gocron.JobDefinition {
	if r.Cron != "" {
		return gocron.CronJob(r.Cron, false)
	}
	return gocron.DurationJob(r.Every)
}

// runCheck is a rule's scheduled job.
func (e *Engine) runCheck(ctx context.Context, name string) error {
	r, ok := e.ev.rules.Load().Get(name)
	if !ok {
		return nil // removed by a reload
	}
	res, err := e.ev.check(ctx, r, e.clock.Now())
	if err != nil {
		if ctx.Err() == nil {
			e.bufferFailed()
		}
		e.rep.Fail(ctx, "check rule "+name, slog.LevelWarn, "check rule", err, "rule", name)
		return err
	}
	e.rep.OK(ctx, "check rule "+name)
	if res.Breached {
		e.log.Debug("rule breached", "rule", name, "value", res.Value, "groups", len(res.Breaching))
	}
	return nil
}

// Check runs one rule's check now, outside the schedule (for tests and
// tools). It evaluates even when this replica does not hold the lease, but
// then changes no state.
func (e *Engine) Check(ctx context.Context, rule string) (CheckResult, error) {
	r, ok := e.ev.rules.Load().Get(rule)
	if !ok {
		return CheckResult{}, fmt.Errorf("check rule %s: no such rule", rule)
	}
	return e.ev.check(ctx, r, e.clock.Now())
}

// Reload loads the rule files again and builds what the new rules need
// that can still fail, their scheduled jobs, before it touches the running
// ones. Only a complete, valid result replaces them: the running checks
// stop, the new rules take over and are checked at once,
// authpipe_rules_last_reload_successful is 1. Anything less (a file that
// does not load, a job that cannot be scheduled) is logged, keeps the old
// rules and their schedule running, and sets it to 0. Safe to call at any
// time, from any goroutine (SIGHUP).
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sig = e.cfg.rulesSignature()
	rs, err := e.cfg.loadRules()
	var sched gocron.Scheduler
	if err == nil {
		sched, err = e.schedule(rs)
	}
	if err != nil {
		e.m.reloadOK.Set(0)
		e.log.Error("reload threshold rules; keeping the previous rules", "err", err)
		return fmt.Errorf("reload threshold rules: %w", err)
	}

	// Complete and valid: swap. The old checks end before the new rules are
	// in force, so no check runs a rule of the other set.
	if e.sched != nil {
		if err := e.sched.Shutdown(); err != nil {
			e.log.Warn("stop scheduler", "err", err)
		}
	}
	old := e.ev.rules.Swap(rs)
	if e.sched != nil {
		e.sched = sched
		sched.Start()
	} else {
		_ = sched.Shutdown() // not running: Run schedules the rules in force when it starts
	}
	if e.cfg.Local != nil {
		checkRetention(e.cfg.Local, rs, e.log)
	}
	for _, r := range rs.Rules {
		e.m.addRule(r.Name)
	}
	for _, r := range old.Rules {
		if _, kept := rs.Get(r.Name); !kept {
			e.m.removeRule(r.Name)
		}
	}
	e.m.reloadOK.Set(1)
	e.m.reloadTime.Set(float64(e.clock.Now().UnixNano()) / 1e9)
	e.log.Info("threshold rules loaded", "rules", len(rs.Rules))
	return nil
}

// watch polls the rule files and reloads when they change.
func (e *Engine) watch(ctx context.Context) {
	e.every(ctx, e.cfg.ReloadInterval, func() {
		e.mu.Lock()
		changed := e.cfg.rulesSignature() != e.sig
		e.mu.Unlock()
		if changed {
			_ = e.Reload()
		}
	})
}

// every calls fn every d, on the engine's clock, until ctx ends.
func (e *Engine) every(ctx context.Context, d time.Duration, fn func()) {
	t := e.clock.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		fn()
	}
}

// loadRules loads the rules from Rules, or else from RulesPath.
func (c Config) loadRules() (*rules.Set, error) {
	if c.Rules != nil {
		return rules.LoadData(c.RulesPath, c.Rules)
	}
	return rules.Load(c.RulesPath)
}

// rulesSignature describes the rule files' names, sizes and modification
// times: it changes when a file is edited, added or removed (a constant for
// Rules).
func (c Config) rulesSignature() string {
	if c.Rules != nil {
		return "built in"
	}
	files, err := rules.Files(c.RulesPath)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		info, err := os.Stat(f)
		if err != nil {
			b.WriteString(f + " missing\n")
			continue
		}
		fmt.Fprintf(&b, "%s %d %d\n", filepath.Clean(f), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}
