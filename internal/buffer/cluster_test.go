package buffer_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/lease"
	"github.com/authpipe/authpipe/internal/testredis"
)

// TestConformanceCluster runs the whole conformance suite against a real
// three-node Redis Cluster: every script, transaction and pipeline of a
// tenant stays on the node of the tenant's hash tag.
func TestConformanceCluster(t *testing.T) {
	rdb := testredis.StartCluster(t).Client(t)
	Run(t, func(t *testing.T) Opener { return redisOpenerOn(t, rdb) },
		Options{WallClockIdle: true})
}

// TestClusterTenantsSpreadOverNodes: tenants land on different nodes, and
// each one's whole life cycle (fenced append, group read, ack, dead letter,
// trim, stats) works there.
func TestClusterTenantsSpreadOverNodes(t *testing.T) {
	cl := testredis.StartCluster(t)
	rdb := cl.Client(t)
	ctx := t.Context()
	nodes := map[string]bool{}
	for i := range 8 {
		tenant := testredis.Name(t)
		b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: tenant}, buffer.Deps{})
		require.NoError(t, err)
		node, err := rdb.MasterForKey(ctx, b.StreamKey())
		require.NoError(t, err)
		nodes[node.Options().Addr] = true

		l, err := lease.New(rdb, lease.Config{Name: b.Key("lease:poller"), Owner: "o", TTL: time.Minute}, lease.Deps{})
		require.NoError(t, err)
		ok, err := l.Acquire(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		logs := Page(time.Now().Add(time.Duration(i)*time.Minute), 0, 5)
		added, err := b.AppendFenced(ctx, logs, logs[4].ID, buffer.Fence{Key: lease.FenceKey(b.Key("lease:poller")), Token: l.Token()})
		require.NoError(t, err)
		require.Equal(t, 5, added)
		require.NoError(t, b.EnsureGroup(ctx, "fwd"))
		es, err := b.Read(ctx, "fwd", "c", 10, 10*time.Millisecond)
		require.NoError(t, err)
		require.Len(t, es, 5)
		require.NoError(t, b.Ack(ctx, "fwd", es[0].ID, es[1].ID))
		require.NoError(t, b.DeadLetter(ctx, "fwd", es[2], "invalid: test"))
		_, err = b.Trim(ctx)
		require.NoError(t, err)
		st, err := b.Stats(ctx, "fwd")
		require.NoError(t, err)
		// Acknowledged and dead-lettered entries left; the dedupe record,
		// in the tenant's slot, still knows them.
		require.Equal(t, buffer.Stats{Length: 2, Backlog: 2, Pending: 2, DeadLetters: 1}, st)
		added, err = b.Append(ctx, logs, logs[4].ID)
		require.NoError(t, err)
		require.Zero(t, added)
		require.NoError(t, l.Release(ctx))
	}
	require.GreaterOrEqual(t, len(nodes), 2, "tenants spread over the cluster's nodes")
}
