package buffer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// ErrFenced is the error (wrapped) of an AppendFenced whose fencing token
// is no longer the lease's current one: another process acquired the lease
// since. Nothing was written.
var ErrFenced = errors.New("fenced: the lease was taken over by a newer holder")

// Fence is a lease holder's right to write a tenant's checkpoint: the key
// of the lease's fencing-token counter (lease.FenceKey of the lease name;
// it must carry the tenant's hash tag, e.g. authpipe:{t}:lease:poller:fence)
// and the token this holder got when it acquired the lease.
type Fence struct {
	Key   string
	Token int64
}

// AppendFenced is Append for a writer that holds a lease: inside the same
// script, before its first write, it checks that fence.Token is still the
// lease's current token (the value of fence.Key). Acquiring the lease
// increments that counter, so once another process holds the lease, every
// AppendFenced of the previous holder fails with ErrFenced and writes
// nothing — neither events nor the checkpoint — even if it was already on
// its way to Redis when the lease changed hands.
func (b *Redis) AppendFenced(ctx context.Context, logs []auth0log.Log, checkpoint string, fence Fence) (int, error) {
	return b.appendPage(ctx, logs, checkpoint, &fence)
}

// checkFence refuses a fence that would make the script cross hash slots
// (Redis Cluster) or can never match.
func (b *Redis) checkFence(f Fence) error {
	if !strings.HasPrefix(f.Key, b.Key("")) {
		return fmt.Errorf("append page: fence key %q is not a key of tenant %s (want prefix %s)", f.Key, b.cfg.Tenant, b.Key(""))
	}
	if f.Token <= 0 {
		return fmt.Errorf("append page: %w: no lease token", ErrFenced)
	}
	return nil
}

func newFenceCounter(reg prometheus.Registerer) prometheus.Counter {
	return promauto.With(reg).NewCounter(prometheus.CounterOpts{
		Name: "authpipe_buffer_fenced_appends_total",
		Help: "Pages refused because the writer's lease fencing token was no longer the current one " +
			"(a poller that lost its lease); nothing of them was written.",
	})
}
