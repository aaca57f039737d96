package buffer

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
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
	stages := metrics.NewStages(reg)
	clock := clockwork.NewFakeClockAt(time.Now())
	b, err := NewRedis(rdb, cfg, Deps{Registerer: reg, Clock: clock, Stages: stages})
	require.NoError(t, err)
	return &fixture{b: b, rdb: rdb, reg: reg, stages: stages, clock: clock, ctx: t.Context()}
}

// logAt returns a log whose log_id embeds time at and ends in seq.
func logAt(at time.Time, seq int) auth0log.Log {
	id := fmt.Sprintf("900%s%039d", at.UTC().Format("20060102150405"), seq)
	raw, _ := json.Marshal(map[string]any{
		"log_id": id, "date": at.UTC().Format(time.RFC3339Nano), "type": "s", "user_name": fmt.Sprintf("user%d", seq),
	})
	return auth0log.Log{ID: id, Date: at.UTC(), Type: "s", Raw: raw}
}

// page returns n logs with ascending ids seq from..from+n-1 at time at.
func page(at time.Time, from, n int) []auth0log.Log {
	logs := make([]auth0log.Log, n)
	for i := range logs {
		logs[i] = logAt(at, from+i)
	}
	return logs
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// appendAll appends logs with their last id as checkpoint.
func (f *fixture) appendAll(t *testing.T, logs []auth0log.Log) int {
	t.Helper()
	added, err := f.b.Append(f.ctx, logs, logs[len(logs)-1].ID)
	require.NoError(t, err)
	return added
}

// streamLogIDs returns the log_ids in the stream, in stream order.
func (f *fixture) streamLogIDs(t *testing.T) []string {
	t.Helper()
	msgs, err := f.rdb.XRange(f.ctx, f.b.StreamKey(), "-", "+").Result()
	require.NoError(t, err)
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ids = append(ids, m.Values["id"].(string))
	}
	return ids
}

func (f *fixture) streamIDs(t *testing.T) []string {
	t.Helper()
	msgs, err := f.rdb.XRange(f.ctx, f.b.StreamKey(), "-", "+").Result()
	require.NoError(t, err)
	ids := make([]string, 0, len(msgs))
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	return ids
}

func (f *fixture) pending(t *testing.T, group string) []redis.XPendingExt {
	t.Helper()
	res, err := f.rdb.XPendingExt(f.ctx, &redis.XPendingExtArgs{
		Stream: f.b.StreamKey(), Group: group, Start: "-", End: "+", Count: 1000,
	}).Result()
	require.NoError(t, err)
	return res
}

func logIDs(logs []auth0log.Log) []string {
	ids := make([]string, len(logs))
	for i, l := range logs {
		ids[i] = l.ID
	}
	return ids
}

func entryIDs(es []Entry) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}
