package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/auth0poll"
)

// backfiller is the admin API's Backfiller: it backfills every tenant of
// this worker in turn, through the tenants' running pollers (same client
// and rate-limit pacing), one backfill at a time. It is an actor of the
// run group, stopped with the pollers: a running backfill is cancelled
// before the forwarders drain and the buffers close (the part done stays
// buffered), and none starts after.
type backfiller struct {
	tenants []*tenant
	log     *slog.Logger

	mu      sync.Mutex
	status  admin.BackfillStatus
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{}
}

var _ admin.Backfiller = (*backfiller)(nil)

func newBackfiller(tenants []*tenant, log *slog.Logger) *backfiller {
	return &backfiller{tenants: tenants, log: log, status: admin.BackfillStatus{State: "idle"}}
}

// errStopping refuses a backfill while the worker shuts down.
var errStopping = errors.New("the worker is shutting down")

// Start begins a backfill of [since, now) of every tenant in the
// background; it runs until done or the worker stops.
func (b *backfiller) Start(_ context.Context, since time.Time) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return "", fmt.Errorf("backfill: %w", errStopping)
	}
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

// Progress reports the current or last backfill. The times it points to
// are never written once set: the copy may share them.
func (b *backfiller) Progress() admin.BackfillStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status
}

// Run waits until ctx ends, then refuses new backfills, cancels a running
// one and waits for it.
func (b *backfiller) Run(ctx context.Context) error {
	<-ctx.Done()
	b.mu.Lock()
	b.stopped = true
	cancel, done := b.cancel, b.done
	b.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}
