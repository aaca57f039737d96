package buffer

import (
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer/internal/testlog"
	"github.com/authpipe/authpipe/internal/metrics"
	"github.com/authpipe/authpipe/internal/testredis"
)

type fixture struct {
	b      *Redis
	rdb    redis.UniversalClient
	reg    *prometheus.Registry
	stages *metrics.Stages
	clock  *clockwork.FakeClock
	ctx    context.Context
}

// newFixture builds a buffer for a fresh tenant on the shared test server.
// The fake clock starts at the real time.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	return newFixtureOn(t, testredis.Client(t), cfg)
}

func newFixtureOn(t *testing.T, rdb redis.UniversalClient, cfg Config) *fixture {
	t.Helper()
	if cfg.Tenant == "" {
		cfg.Tenant = testredis.Name(t)
	}
	reg := prometheus.NewPedanticRegistry()
	treg := metrics.Tenant(reg, cfg.Tenant) // as package pipeline hands it out
	stages := metrics.NewStages(treg)
	clock := clockwork.NewFakeClockAt(time.Now())
	b, err := NewRedis(rdb, cfg, Deps{Registerer: treg, Clock: clock, Stages: stages})
	require.NoError(t, err)
	return &fixture{b: b, rdb: rdb, reg: reg, stages: stages, clock: clock, ctx: t.Context()}
}

// The tests' logs, shared with the conformance suite.
var (
	base   = testlog.Base
	logAt  = testlog.LogAt
	page   = testlog.Page
	logIDs = testlog.LogIDs
)

// appendAll appends logs with their last id as checkpoint.
func (f *fixture) appendAll(t *testing.T, logs []auth0log.Log) int {
	t.Helper()
	added, err := f.b.Append(f.ctx, logs, logs[len(logs)-1].ID)
	require.NoError(t, err)
	return added
}

// streamLogIDs returns the log_ids in the stream, in stream order.
func (f *fixture) streamLogIDs(t *testing.T) []string {
	return f.streamField(t, func(m redis.XMessage) string { return m.Values["id"].(string) })
}

// streamIDs returns the stream ids of the stream's entries.
func (f *fixture) streamIDs(t *testing.T) []string {
	return f.streamField(t, func(m redis.XMessage) string { return m.ID })
}

func (f *fixture) streamField(t *testing.T, field func(redis.XMessage) string) []string {
	t.Helper()
	msgs, err := f.rdb.XRange(f.ctx, f.b.StreamKey(), "-", "+").Result()
	require.NoError(t, err)
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = field(m)
	}
	return out
}

func (f *fixture) pending(t *testing.T, group string) []redis.XPendingExt {
	t.Helper()
	res, err := f.rdb.XPendingExt(f.ctx, &redis.XPendingExtArgs{
		Stream: f.b.StreamKey(), Group: group, Start: "-", End: "+", Count: 1000,
	}).Result()
	require.NoError(t, err)
	return res
}

func entryIDs(es []Entry) []string {
	return testlog.IDs(es, func(e Entry) string { return e.ID })
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// appendKeys are the append script's KEYS for a page of logs.
func (f *fixture) appendKeys(logs []auth0log.Log) []string {
	keys := []string{f.b.StreamKey(), f.b.Key("seen"), f.b.Key("checkpoint"), f.b.Key("behind"), f.b.Key("head"), f.b.Key("seen:index")}
	hours := map[string]bool{}
	for _, l := range logs {
		h, err := idHour(l.ID)
		if err == nil && !hours[h] {
			hours[h] = true
			keys = append(keys, f.b.bucketKey(h))
		}
	}
	return keys
}

// bucketKeys lists the tenant's dedupe bucket keys in Redis.
func (f *fixture) bucketKeys(t *testing.T) []string {
	t.Helper()
	keys, err := f.rdb.Keys(f.ctx, f.b.Key("seen")+":20*").Result()
	require.NoError(t, err)
	return keys
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
