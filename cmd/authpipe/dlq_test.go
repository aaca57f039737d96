package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/pipeline"
	"github.com/authpipe/authpipe/internal/testredis"
)

// dlqBackend is the buffer the tests fill with dead letters.
type dlqBackend interface {
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	DeadLetter(ctx context.Context, group string, e buffer.Entry, reason string) error
	DeadLetters(ctx context.Context, count int) ([]buffer.DeadLetter, error)
}

// fillDLQ dead-letters n events in b.
func fillDLQ(t *testing.T, b dlqBackend, n int) []buffer.DeadLetter {
	t.Helper()
	ctx := t.Context()
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	logs := make([]auth0log.Log, n)
	for i := range logs {
		id := fmt.Sprintf("900%s%039d", at.Format("20060102150405"), i)
		raw := fmt.Sprintf(`{"log_id":%q,"type":"f","user_name":"person%d@example.com"}`, id, i)
		logs[i] = auth0log.Log{ID: id, Date: at, Type: "f", Raw: json.RawMessage(raw)}
	}
	_, err := b.Append(ctx, logs, logs[n-1].ID)
	require.NoError(t, err)
	require.NoError(t, b.EnsureGroup(ctx, pipeline.ForwardGroup))
	es, err := b.Read(ctx, pipeline.ForwardGroup, "c", n, -1)
	require.NoError(t, err)
	for _, e := range es {
		require.NoError(t, b.DeadLetter(ctx, pipeline.ForwardGroup, e, "segment_rejected: 400 bad\nsecond line"))
	}
	dls, err := b.DeadLetters(ctx, n+100)
	require.NoError(t, err)
	require.Equal(t, n, len(dls))
	return dls
}

// dlqEnv configures authpipe for the dlq command in this process.
func dlqEnv(t *testing.T, tenant string, kv ...string) {
	for k, v := range map[string]string{
		"AUTHPIPE_CONFIG": "", "AUTH0_DOMAIN": "acme.eu.auth0.com", "AUTH0_CLIENT_ID": "client",
		"AUTH0_CLIENT_SECRET": "dlq-test-secret", "SEGMENT_WRITE_KEY": "dlq-test-write-key",
		"AUTHPIPE_TENANT": tenant, "REDIS_URL": "", "AUTHPIPE_DATA_DIR": "",
	} {
		t.Setenv(k, v)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := cli(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDLQCommandRedis(t *testing.T) {
	tenant := fmt.Sprintf("dlq%08x", rand.Uint32())
	addr := testredis.Addr(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: tenant}, buffer.Deps{})
	require.NoError(t, err)
	dls := fillDLQ(t, b, 3)
	dlqEnv(t, tenant, "REDIS_URL", "redis://"+addr+"/0")

	code, out, errOut := runCLI("dlq", "list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "ID  ")
	require.Contains(t, out, "LOG_ID")
	for _, d := range dls {
		require.Contains(t, out, d.ID)
		require.Contains(t, out, d.LogID)
	}
	require.Contains(t, out, "segment_rejected: 400 bad second line", "a reason stays on its row")
	require.NotContains(t, out, "example.com", "no raw event without --raw")
	require.Equal(t, 4, strings.Count(out, "\n"))

	code, out, _ = runCLI("dlq", "list", "--raw")
	require.Equal(t, 0, code)
	require.Contains(t, out, "person0@example.com")

	code, out, errOut = runCLI("dlq", "list", "--json", "--limit", "2")
	require.Equal(t, 0, code, errOut)
	var resp admin.DLQResponse
	require.NoError(t, json.Unmarshal([]byte(out), &resp), out)
	require.Equal(t, tenant, resp.Tenant)
	require.Len(t, resp.DeadLetters, 2)
	require.Equal(t, dls[1].ID, resp.Next)
	require.Nil(t, resp.DeadLetters[0].Raw)

	code, out, _ = runCLI("dlq", "list", "--limit", "2", "--after", dls[1].ID)
	require.Equal(t, 0, code)
	require.Contains(t, out, dls[2].ID)
	require.NotContains(t, out, dls[0].ID)

	tests := []struct {
		name    string
		args    []string
		want    int
		wantOut string
		wantErr string
	}{
		{"replay needs ids", []string{"dlq", "replay"}, 2, "", "give dead-letter ids"},
		{"replay bad id", []string{"dlq", "replay", "12"}, 2, "", `"12" is not a dead-letter id`},
		{"ids and all", []string{"dlq", "drop", dls[0].ID, "--all"}, 2, "", "not both"},
		{"unknown subcommand", []string{"dlq", "purge"}, 2, "", `unknown command "purge"`},
		{"unknown tenant", []string{"dlq", "list", "--tenant", "nope"}, 2, "", `--tenant "nope" is not a configured tenant`},
		{"replay one", []string{"dlq", "replay", dls[0].ID}, 0, "replayed 1 dead letters of tenant " + tenant, ""},
		{"replay it again", []string{"dlq", "replay", dls[0].ID}, 0, "replayed 0 dead letters", "1 of the ids given were not dead letters"},
		{"drop all", []string{"dlq", "drop", "--all"}, 0, "dropped 2 dead letters", ""},
		{"nothing left", []string{"dlq", "list"}, 0, "no dead letters (tenant " + tenant + ")", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(tt.args...)
			require.Equal(t, tt.want, code, "stdout %s\nstderr %s", out, errOut)
			require.Contains(t, out, tt.wantOut)
			require.Contains(t, errOut, tt.wantErr)
			require.NotContains(t, out+errOut, "dlq-test-secret")
		})
	}
	// The replayed event is back in the stream, with its log_id.
	es, err := b.Read(t.Context(), pipeline.ForwardGroup, "c", 10, -1)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, dls[0].LogID, es[0].LogID)
}

func TestDLQCommandEmbedded(t *testing.T) {
	dir := t.TempDir()
	dlqEnv(t, "acme", "AUTHPIPE_DATA_DIR", dir)

	code, _, errOut := runCLI("dlq", "list")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no embedded buffer of tenant acme in AUTHPIPE_DATA_DIR")

	b, err := buffer.OpenBolt(dir, buffer.Config{Tenant: "acme"}, buffer.Deps{})
	require.NoError(t, err)
	dls := fillDLQ(t, b, 2)

	// A running worker holds the file: the command points at the admin API.
	code, _, errOut = runCLI("dlq", "list")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "is in use by a running authpipe: stop it first, or use its admin API")
	require.NoError(t, b.Close())

	code, out, errOut := runCLI("dlq", "list")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, dls[1].ID)
	code, out, errOut = runCLI("dlq", "replay", "--all")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "replayed 2 dead letters of tenant acme")

	b, err = buffer.OpenBolt(dir, buffer.Config{Tenant: "acme"}, buffer.Deps{})
	require.NoError(t, err)
	defer b.Close()
	left, err := b.DeadLetters(t.Context(), 10)
	require.NoError(t, err)
	require.Empty(t, left)
	es, err := b.Read(t.Context(), pipeline.ForwardGroup, "c", 10, -1)
	require.NoError(t, err)
	require.Len(t, es, 2)
}
