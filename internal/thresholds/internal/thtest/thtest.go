// Package thtest builds what the threshold packages' tests feed the
// engine and the stores: Auth0 logs, rule sets, a Redis buffer with
// entries pending in a group. For tests only.
package thtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

var logSeq atomic.Int64

// Seq returns a number no earlier call returned: unique ids across a test binary.
func Seq() int64 { return logSeq.Add(1) }

// Log builds an Auth0 log of type typ at date with the given fields.
func Log(t testing.TB, typ string, date time.Time, fields map[string]string) auth0log.Log {
	t.Helper()
	id := "900" + date.UTC().Format("20060102150405") + fmt.Sprintf("%039d", Seq())
	m := map[string]any{"log_id": id, "date": date.UTC().Format(time.RFC3339Nano), "type": typ, "description": "test"}
	for k, v := range fields {
		m[k] = v
	}
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	l, err := auth0log.Decode(raw)
	require.NoError(t, err)
	return l
}

// Burst builds n logs of typ from ip, 100 ms apart, the last at date.
func Burst(t testing.TB, n int, typ, ip string, date time.Time) []auth0log.Log {
	logs := make([]auth0log.Log, n)
	for i := range logs {
		logs[i] = Log(t, typ, date.Add(time.Duration(i-n+1)*100*time.Millisecond),
			map[string]string{"ip": ip, "user_name": fmt.Sprintf("user%d@example.com", i%3), "user_id": "auth0|u"})
	}
	return logs
}

// Rules parses a rule file's content into a set.
func Rules(t testing.TB, src string) *rules.Set {
	t.Helper()
	rs, err := rules.LoadData("test.yml", []byte(src))
	require.NoError(t, err)
	return rs
}

// RedisBuffer returns the buffer of tenant on client.
func RedisBuffer(t testing.TB, client redis.UniversalClient, tenant string, clock clockwork.Clock) *buffer.Redis {
	t.Helper()
	b, err := buffer.NewRedis(client, buffer.Config{Tenant: tenant}, buffer.Deps{Clock: clock, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	return b
}

// Pending appends logs and reads them with group as consumer, so they are
// pending in the group (what the engine's consumer does).
func Pending(t testing.TB, b *buffer.Redis, group, consumer string, logs []auth0log.Log) []buffer.Entry {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.EnsureGroup(ctx, group))
	_, err := b.Append(ctx, logs, "")
	require.NoError(t, err)
	var out []buffer.Entry
	for len(out) < len(logs) {
		es, err := b.Read(ctx, group, consumer, 1000, 100*time.Millisecond)
		require.NoError(t, err)
		require.NotEmpty(t, es)
		out = append(out, es...)
	}
	return out
}
