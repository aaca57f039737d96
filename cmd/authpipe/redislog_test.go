package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// TestGoRedisLogsAreJSON: go-redis' own lines (here: the pool giving up
// dialing a Redis that is not there) come out as slog JSON with
// component=go-redis, and URL credentials never reach the log.
func TestGoRedisLogsAreJSON(t *testing.T) {
	var out testlogs.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&out, nil)))
	redis.SetLogger(goRedisLogger{})
	t.Cleanup(func() {
		logging.Enable() // go-redis' default logger again
		slog.SetDefault(prev)
	})

	c := redis.NewClient(&redis.Options{Addr: e2etest.FreeAddr(t), MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.Error(t, c.Ping(ctx).Err(), "nothing listens there")
	goRedisLogger{}.Printf(ctx, "redis: sentinel: %s", "dial redis://default:hunter2@10.0.0.1:26379/0 failed")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.GreaterOrEqual(t, len(lines), 2, out.String())
	var dial bool
	for _, line := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "not JSON: %s", line)
		require.Equal(t, "go-redis", rec["component"], line)
		require.Equal(t, "WARN", rec["level"], line)
		require.Equal(t, "redis client library", rec["msg"], line)
		dial = dial || strings.Contains(rec["detail"].(string), "failed to dial")
	}
	require.True(t, dial, "the pool's dial failure came through: %s", out.String())
	require.NotContains(t, out.String(), "hunter2")
	require.Contains(t, out.String(), "redis://<redacted>@10.0.0.1:26379/0")
}
