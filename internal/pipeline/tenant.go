package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/lease"
	"github.com/authpipe/authpipe/internal/thresholds"
)

// tenant is one tenant's components: its buffer, poller, forwarder and
// threshold engine, all under the tenant's name.
type tenant struct {
	name   string
	cfg    *config.Config // the tenant's view of the configuration (config.ForTenant)
	logger *slog.Logger
	buf    Buffer
	poller *auth0poll.Poller
	watch  *auth0stream.Watch // the tenant's Log Stream against the poller; nil when the receiver is off
	fwd    *forward.Forwarder
	rules  *thresholds.Engine

	// On Redis, only the holder of the tenant's poller lease polls.
	lease   *lease.Lease // nil on the embedded buffer: one process, always polls
	leader  prometheus.Gauge
	decided atomic.Bool // the first attempt at the lease was made
}

// newTenant builds one tenant's buffer, poller, forwarder and threshold
// engine; cfg is the tenant's view of the configuration. Their metrics go
// to the tenant's registerer (Store.Metrics), which adds the tenant label;
// segment counts the forwarder's Segment requests with every tenant's.
func newTenant(cfg *config.Config, st *Store, rules RulesSource, segment *forward.Requests, logger *slog.Logger) (*tenant, error) {
	reg, stages := st.Metrics(cfg.Tenant)
	t := &tenant{name: cfg.Tenant, cfg: cfg, logger: logger.With("tenant", cfg.Tenant)}
	var err error
	if t.leader, err = newLeaderGauge(reg); err != nil {
		return nil, err
	}
	if t.buf, err = st.Buffer(cfg); err != nil {
		return nil, err
	}
	pollBuf := auth0poll.Buffer(t.buf)
	if rb, ok := t.buf.(*buffer.Redis); ok {
		if pollBuf, err = t.newPollerLease(rb); err != nil {
			return nil, err
		}
	}
	var stream auth0poll.Stream // a nil *Watch must not become a non-nil interface
	if cfg.Stream.Enabled() {
		if t.watch, err = auth0stream.NewWatch(cfg.Tenant, auth0stream.WatchConfig{Grace: cfg.Stream.HealthyWindow}, reg, nil); err != nil {
			return nil, err
		}
		stream = t.watch
	}
	if t.poller, err = st.NewPoller(cfg, pollBuf, stream); err != nil {
		return nil, err
	}
	t.fwd, err = forward.New(forward.Config{
		Tenant:        cfg.Tenant,
		WriteKey:      cfg.Segment.WriteKey,
		Endpoint:      cfg.Segment.Endpoint,
		BatchSize:     cfg.Segment.BatchSize,
		FlushInterval: cfg.Segment.FlushInterval,
		MaxInFlight:   cfg.Segment.MaxInFlight,
		Group:         ForwardGroup,
		Consumer:      cfg.Buffer.Consumer,
		ReclaimIdle:   cfg.Buffer.ReclaimIdle,
		HashKey:       cfg.AnonymousIDKey(),
		// Part of the shutdown budget is left for the steps after the
		// drain (Segment clients, acks, the HTTP server, Redis).
		DrainTimeout: cfg.ShutdownTimeout * 2 / 3,
		Filter:       forward.Filter{Include: cfg.Forward.IncludeTypes, Exclude: cfg.Forward.ExcludeTypes},
		PII: forward.PIIPolicy{
			UserName: forward.PIIAction(cfg.PII.UserName), Email: forward.PIIAction(cfg.PII.Email),
			IP: forward.PIIAction(cfg.PII.IP), UserAgent: forward.PIIAction(cfg.PII.UserAgent),
		},
	}, t.buf, forward.Deps{Logger: logger, Registerer: reg, Stages: stages, Requests: segment})
	if err != nil {
		return nil, fmt.Errorf("build forwarder: %w", err)
	}
	if t.rules, err = newEngine(cfg, t.buf, rules, logger, reg); err != nil {
		return nil, err
	}
	return t, nil
}

// newLeaderGauge registers the tenant's authpipe_auth0_poller_leader on
// reg, the tenant's registerer.
func newLeaderGauge(reg prometheus.Registerer) (prometheus.Gauge, error) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "authpipe_auth0_poller_leader",
		Help: "1 on the replica that polls the tenant's Auth0 logs (it holds the tenant's poller lease), else 0.",
	})
	if err := reg.Register(g); err != nil {
		return nil, fmt.Errorf("register poller leader gauge: %w", err)
	}
	return g, nil
}

// newEngine builds the threshold engine over the buffer's own consumer
// group: shared counts and a lease on Redis, in-process counts rebuilt
// from the stream on the embedded buffer.
func newEngine(cfg *config.Config, buf Buffer, rules RulesSource, logger *slog.Logger, reg prometheus.Registerer) (*thresholds.Engine, error) {
	tc := thresholds.Config{
		Tenant:          cfg.Tenant,
		RulesPath:       rules.Path,
		Rules:           rules.Data,
		AlertmanagerURL: cfg.AlertmanagerURL,
		WebhookURL:      cfg.AlertWebhookURL,
		Consumer:        cfg.Buffer.Consumer,
		LeaseTTL:        cfg.Buffer.LeaseTTL,
	}
	switch b := buf.(type) {
	case thresholds.Buffer:
		tc.Buffer = b
	case thresholds.LocalBuffer:
		tc.Local = b
	default:
		return nil, fmt.Errorf("threshold checks: unsupported buffer %T", buf)
	}
	e, err := thresholds.New(tc, thresholds.Deps{Logger: logger, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("AUTHPIPE_RULES: %w", err)
	}
	return e, nil
}

// pollerLeaseName is the key of a tenant's poller lease, under the
// tenant's hash tag; its fencing counter is lease.FenceKey of it.
func pollerLeaseName(b *buffer.Redis) string { return b.Key("lease:poller") }

// newPollerLease returns the tenant's poller lease and the buffer the
// poller writes through: appends that carry a checkpoint are fenced by the
// lease's token.
func (t *tenant) newPollerLease(b *buffer.Redis) (auth0poll.Buffer, error) {
	l, err := lease.New(b.Client(), lease.Config{
		Name:  pollerLeaseName(b),
		Owner: t.cfg.Buffer.Consumer,
		TTL:   t.cfg.Buffer.LeaseTTL,
		OnChange: func(held bool, token int64) {
			if held {
				t.leader.Set(1)
				t.logger.Info("polling this tenant: poller lease acquired", "token", token)
				return
			}
			t.leader.Set(0)
			t.logPollerLeaseLost(token)
		},
		// Redis lost the fencing counter: lost data, counted by the buffer.
		OnRegress: func(found, _ int64) { b.ObserveFence(found) },
	}, lease.Deps{Logger: t.logger})
	if err != nil {
		return nil, fmt.Errorf("poller lease: %w", err)
	}
	t.lease = l
	return fencedBuffer{Redis: b, lease: l, fenceKey: lease.FenceKey(pollerLeaseName(b))}, nil
}

// logPollerLeaseLost says why this replica stopped polling the tenant: a
// fail-over to another replica reads differently from an outage of Redis
// (polling resumes here once the lease is won again) and from a shutdown.
func (t *tenant) logPollerLeaseLost(token int64) {
	why, holder := t.lease.LostBecause()
	switch why {
	case lease.LossReleased:
		t.logger.Info("polling stopped: poller lease released at shutdown", "token", token)
	case lease.LossTakenOver:
		t.logger.Warn("polling stopped: another replica took over this tenant's poller lease", "token", token, "holder", holder)
	case lease.LossUnreachable:
		t.logger.Warn("polling paused: the poller lease lapsed while Redis was unreachable; polling resumes when it is acquired again", "token", token)
	default:
		t.logger.Warn("polling paused: the poller lease lapsed before it was renewed; polling resumes when it is acquired again", "token", token, "reason", string(why))
	}
}

// fencedBuffer is the Redis buffer as the poller of a tenant with replicas
// sees it: a page and its checkpoint are written only with the current
// token of the poller lease, checked inside the append script, so a poller
// that lost its lease can never write a checkpoint. Appends without a
// checkpoint (backfill) need no lease: they only add events, and the
// buffer's dedupe makes concurrent writers of events safe.
type fencedBuffer struct {
	*buffer.Redis
	lease    *lease.Lease
	fenceKey string
}

// errNotLeader is returned for a checkpoint write without the lease.
var errNotLeader = errors.New("poller lease not held: checkpoint not written")

// Full is the buffer's back-pressure check, which the poller makes before
// every request; it also fails while the lease is not held, so that a
// poller whose lease ran out (a stalled process) asks Auth0 for nothing
// until its keeper has stopped it.
func (f fencedBuffer) Full(ctx context.Context) (bool, error) {
	if !f.lease.Held() {
		return false, errNotLeader
	}
	return f.Redis.Full(ctx)
}

func (f fencedBuffer) Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error) {
	if checkpoint == "" {
		return f.Redis.Append(ctx, logs, "")
	}
	token := f.lease.Token()
	if token == 0 {
		return 0, errNotLeader
	}
	return f.Redis.AppendFenced(ctx, logs, checkpoint, buffer.Fence{Key: f.fenceKey, Token: token})
}

// poll runs the tenant's poller: on the embedded buffer at once; on Redis
// whenever this replica holds the tenant's poller lease, stopping as soon as
// the lease is lost (within one lease period) and resuming from the stored
// checkpoint when it is won again. When ctx ends it stops the poller, then
// releases the lease so that another replica takes over at once.
func (t *tenant) poll(ctx context.Context) error {
	if t.lease == nil {
		t.leader.Set(1)
		t.decided.Store(true)
		return t.poller.Run(ctx)
	}
	// Try once up front, so that a single replica polls right away and a
	// follower is told apart from a replica that has not tried yet.
	if _, err := t.lease.Acquire(ctx); err != nil && ctx.Err() == nil {
		t.logger.Warn("acquire poller lease", "err", err)
	}
	t.decided.Store(true)
	keepCtx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		_ = t.lease.Run(keepCtx)
	}()
	defer func() {
		stopKeeper() // releases the lease: the poller has stopped
		<-kept
	}()
	for {
		held, err := t.lease.Wait(ctx)
		if err != nil {
			return nil // ctx ended
		}
		err = t.poller.Run(held)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && held.Err() == nil {
			return err
		}
	}
}

// ready reports whether the tenant is ready: its poller has had an answer
// from Auth0, or another replica polls it.
func (t *tenant) ready() bool {
	if t.poller.Ready() {
		return true
	}
	return t.lease != nil && t.decided.Load() && !t.lease.Held()
}
