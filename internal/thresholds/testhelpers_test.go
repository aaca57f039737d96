package thresholds

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
)

func readTestFile(t *testing.T, path string) testFile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var tf testFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(&tf))
	return tf
}

var logSeq atomic.Int64

// mkLog builds an Auth0 log of type typ at date with the given fields.
func mkLog(t testing.TB, typ string, date time.Time, fields map[string]string) auth0log.Log {
	t.Helper()
	id := "900" + date.UTC().Format("20060102150405") + fmt.Sprintf("%039d", logSeq.Add(1))
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

// burst builds n logs of typ from ip, 100 ms apart, the last at date.
func burst(t testing.TB, n int, typ, ip string, date time.Time) []auth0log.Log {
	logs := make([]auth0log.Log, n)
	for i := range logs {
		logs[i] = mkLog(t, typ, date.Add(time.Duration(i-n+1)*100*time.Millisecond),
			map[string]string{"ip": ip, "user_name": fmt.Sprintf("user%d@example.com", i%3), "user_id": "auth0|u"})
	}
	return logs
}

// newBuffer returns a buffer of a fresh tenant on the shared test server.
func newBuffer(t testing.TB, client redis.UniversalClient, tenant string, clock clockwork.Clock) *buffer.Redis {
	t.Helper()
	b, err := buffer.NewRedis(client, buffer.Config{Tenant: tenant}, buffer.Deps{Clock: clock, Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	return b
}

// writeRules writes a rule file and returns its path.
func writeRules(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := dir + "/" + name
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// pendingFor appends logs and reads them with group as consumer, so they
// are pending in the group (what the engine's consumer does).
func pendingFor(t testing.TB, b *buffer.Redis, group, consumer string, logs []auth0log.Log) []buffer.Entry {
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

// eventOf decodes a buffered log with its fields, as countBatch sees an
// event of a type a rule counts.
func eventOf(id string, raw []byte) (event, error) {
	e, err := eventHead(id, raw)
	if err != nil {
		return event{}, err
	}
	return e, e.readFields()
}
