package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/lease"
	"github.com/authpipe/authpipe/internal/thresholds"
)

// tenantPipeline is one tenant's components: its buffer, poller, forwarder
// and threshold engine, all under the tenant's name, on the app's registry.
type tenantPipeline struct {
	name     string
	cfg      *config.Config // the tenant's view of the configuration (config.ForTenant)
	logger   *slog.Logger
	buf      pipelineBuffer
	closeBuf func() error // nil on Redis: the app closes the shared client
	poller   *auth0poll.Poller
	fwd      *forward.Forwarder
	rules    *thresholds.Engine

	// On Redis, only the holder of the tenant's poller lease polls.
	lease   *lease.Lease // nil on the embedded buffer: one process, always polls
	leader  prometheus.Gauge
	decided atomic.Bool // the first attempt at the lease was made
}

// pollerLeaseName is the key of a tenant's poller lease, under the
// tenant's hash tag; its fencing counter is lease.FenceKey of it.
func pollerLeaseName(b *buffer.Redis) string { return b.Key("lease:poller") }

// newPollerLease returns the tenant's poller lease and the buffer the
// poller writes through: appends that carry a checkpoint are fenced by the
// lease's token.
func (t *tenantPipeline) newPollerLease(b *buffer.Redis) (auth0poll.Buffer, error) {
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
func (t *tenantPipeline) logPollerLeaseLost(token int64) {
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
func (t *tenantPipeline) poll(ctx context.Context) error {
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
func (t *tenantPipeline) ready() bool {
	if t.poller.Ready() {
		return true
	}
	return t.lease != nil && t.decided.Load() && !t.lease.Held()
}

// close closes the tenant's embedded buffer; Redis buffers share the app's
// client.
func (t *tenantPipeline) close() error {
	if t.closeBuf == nil {
		return nil
	}
	return t.closeBuf()
}
