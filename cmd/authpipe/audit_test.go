package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/pipeline"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// auditEntries reads an audit log file.
func auditEntries(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		out = append(out, m)
	}
	return out
}

func recordIDs(e map[string]any) []string {
	var ids []string
	recs, _ := e["records"].([]any)
	for _, r := range recs {
		ids = append(ids, r.(map[string]any)["id"].(string))
	}
	return ids
}

func osUser(t *testing.T) string {
	u, err := user.Current()
	require.NoError(t, err)
	return u.Username
}

// TestDLQCommandAudit: authpipe dlq list, drop and replay write the admin
// API's entries with the OS user and host, to the audit log file and the
// Redis stream, before they show or change anything: a list records the
// ids it prints, a 150-id drop all 150 ids (and log_ids), --all the dead
// letters it meant. authpipe audit verify passes on both.
func TestDLQCommandAudit(t *testing.T) {
	srv := testredis.Start(t)
	tenant := fmt.Sprintf("dlqa%08x", rand.Uint32())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: tenant}, buffer.Deps{})
	require.NoError(t, err)
	dls := fillDLQ(t, b, 160)
	log := filepath.Join(t.TempDir(), "audit.jsonl")
	dlqEnv(t, tenant, "REDIS_URL", "redis://"+srv.Addr+"/0", "AUTHPIPE_ADMIN_AUDIT_LOG", log)
	host, err := os.Hostname()
	require.NoError(t, err)

	code, out, errOut := runCLI("dlq", "list", "--limit", "5")
	require.Equal(t, 0, code, errOut)
	entries := auditEntries(t, log)
	require.Len(t, entries, 1)
	e := entries[0]
	for k, v := range map[string]any{
		"kind": "request", "auth": "os", "sub": osUser(t), "host": host, "method": "CLI", "path": "authpipe dlq list",
		"operation": admin.OpDLQList, "resource": "tenants/" + tenant + "/dlq", "outcome": "allowed", "status": 0.0,
		"token_thumbprint": "", "claims_verified": true,
	} {
		require.Equal(t, v, e[k], k)
	}
	require.Equal(t, map[string]any{"limit": []any{"5"}}, e["query"])
	require.Equal(t, []any{tenant}, e["tenants"])
	require.Equal(t, []string{dls[0].ID, dls[1].ID, dls[2].ID, dls[3].ID, dls[4].ID}, recordIDs(e), "the ids printed")
	for _, id := range recordIDs(e) {
		require.Contains(t, out, id)
	}
	require.Equal(t, dls[0].LogID, e["records"].([]any)[0].(map[string]any)["log_id"])

	ids := make([]string, 150)
	for i := range ids {
		ids[i] = dls[i].ID
	}
	code, out, errOut = runCLI(append([]string{"dlq", "drop"}, ids...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "dropped 150 dead letters")
	entries = auditEntries(t, log)
	require.Len(t, entries, 3)
	req, res := entries[1], entries[2]
	require.Equal(t, "request", req["kind"])
	require.Nil(t, req["status"], "written before the drop")
	require.Equal(t, ids, recordIDs(req), "all 150 ids, none cut")
	require.Equal(t, "result", res["kind"])
	require.Equal(t, req["id"], res["id"])
	require.EqualValues(t, 150, res["affected"])
	require.EqualValues(t, 0, res["status"])

	code, _, errOut = runCLI("dlq", "replay", "--all")
	require.Equal(t, 0, code, errOut)
	entries = auditEntries(t, log)
	require.Len(t, entries, 5)
	var rest []string
	for _, d := range dls[150:] {
		rest = append(rest, d.ID)
	}
	require.Equal(t, rest, recordIDs(entries[3]), "--all recorded as the dead letters it meant")
	require.Equal(t, map[string]any{"all": []any{"true"}}, entries[3]["query"])
	require.EqualValues(t, 10, entries[4]["affected"])

	// The stream holds the same entries; both chains verify.
	msgs, err := rdb.XRange(t.Context(), audit.DefaultKeys.Stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 5)
	code, out, errOut = runCLI("audit", "verify")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Contains(t, out, log+": ok: 5 entries, seq 1 to 5 (from the chain's first entry)")
	require.Contains(t, out, audit.DefaultKeys.Stream+": ok: 5 entries")

	code, out, errOut = runCLI("audit", "tail", "-n", "2")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[1], `"kind":"result"`)
	code, out, _ = runCLI("audit", "tail", "-n", "1", "--redis")
	require.Equal(t, 0, code)
	require.Contains(t, out, `"seq":5,`)
}

// TestDLQCommandFailClosed: with the audit log on /dev/full and the Redis
// audit key replaced by a string, authpipe dlq list shows nothing and
// authpipe dlq drop --all drops nothing; both exit 1 and say why.
func TestDLQCommandFailClosed(t *testing.T) {
	srv := testredis.Start(t)
	tenant := fmt.Sprintf("dlqf%08x", rand.Uint32())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b, err := buffer.NewRedis(rdb, buffer.Config{Tenant: tenant}, buffer.Deps{})
	require.NoError(t, err)
	dls := fillDLQ(t, b, 3)
	require.NoError(t, rdb.Set(t.Context(), audit.DefaultKeys.Stream, "not a stream", 0).Err())
	dlqEnv(t, tenant, "REDIS_URL", "redis://"+srv.Addr+"/0", "AUTHPIPE_ADMIN_AUDIT_LOG", "/dev/full")

	code, out, errOut := runCLI("dlq", "list", "--raw")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "the audit trail cannot be written, so nothing was done or shown")
	require.NotContains(t, out, dls[0].ID)
	require.NotContains(t, out, "example.com")

	code, out, errOut = runCLI("dlq", "drop", "--all")
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "nothing was done")
	left, err := b.DeadLetters(t.Context(), 10)
	require.NoError(t, err)
	require.Len(t, left, 3, "every dead letter is kept")

	// With one sink back, the next command is recorded and served.
	require.NoError(t, rdb.Del(t.Context(), audit.DefaultKeys.Stream).Err())
	code, _, errOut = runCLI("dlq", "list")
	require.Equal(t, 0, code, errOut)
	msgs, err := rdb.XRange(t.Context(), audit.DefaultKeys.Stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 1)
}

// TestAuditVerifyCommand: authpipe audit verify names the entry after one
// deleted or edited, in a file and in the Redis stream, and exits 1.
func TestAuditVerifyCommand(t *testing.T) {
	srv := testredis.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	log := filepath.Join(t.TempDir(), "audit.jsonl")
	dlqEnv(t, "acme", "REDIS_URL", "redis://"+srv.Addr+"/0", "AUTHPIPE_ADMIN_AUDIT_LOG", log)
	cfg, err := config.Load(os.LookupEnv)
	require.NoError(t, err)
	trail, err := pipeline.OpenTrail(cfg, rdb, discardLogger(), prometheus.NewRegistry(), io.Discard)
	require.NoError(t, err)
	for i := range 6 {
		require.NoError(t, trail.Record(t.Context(), audit.Entry{ID: audit.NewID(), Kind: audit.KindRequest, Part: 1, Parts: 1,
			Time: time.Now().UTC(), Operation: fmt.Sprint("op", i), Outcome: audit.OutcomeAllowed, Status: audit.IntPtr(200)}))
	}
	code, out, _ := runCLI("audit", "verify")
	require.Equal(t, 0, code, out)

	// Delete the third line of the file, edit the fourth entry of the stream.
	data, err := os.ReadFile(log)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(data), "\n")
	require.NoError(t, os.WriteFile(log, []byte(strings.Join(append(lines[:2:2], lines[3:]...), "")), 0o600))
	msgs, err := rdb.XRange(t.Context(), audit.DefaultKeys.Stream, "-", "+").Result()
	require.NoError(t, err)
	require.NoError(t, rdb.Del(t.Context(), audit.DefaultKeys.Stream).Err())
	for i, m := range msgs {
		line := m.Values["entry"].(string)
		if i == 3 {
			line = strings.Replace(line, `"status":200`, `"status":403`, 1)
		}
		require.NoError(t, rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: audit.DefaultKeys.Stream, ID: m.ID, Values: []any{"entry", line}}).Err())
	}
	code, out, _ = runCLI("audit", "verify")
	require.Equal(t, 1, code)
	require.Contains(t, out, log+": BROKEN at line 3 (seq 4): 1 entry missing before it (seq 3), after line 2: deleted")
	require.Contains(t, out, audit.DefaultKeys.Stream+": BROKEN at stream id "+msgs[4].ID+" (seq 5): its prev does not match the hash of the entry before it (stream id "+msgs[3].ID+", seq 4): that entry was edited")

	code, out, _ = runCLI("audit", "verify", "--file", log)
	require.Equal(t, 1, code)
	require.NotContains(t, out, audit.DefaultKeys.Stream, "--file alone reads the file only")
	code, _, errOut := runCLI("audit", "purge")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, `unknown command "purge"`)
	code, out, _ = runCLI("audit", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "authpipe audit verify")
}

// TestBackfillCommandAudit: authpipe backfill records its window and
// tenants before it polls, and the events it added after.
func TestBackfillCommandAudit(t *testing.T) {
	srv := testredis.Start(t)
	a0 := sim.NewAuth0(sim.Auth0Options{ClientID: "client", ClientSecret: "bf-secret"})
	a0.Add(sim.GenerateEvents(rand.New(rand.NewPCG(1, 2)), 30, time.Now().Add(-time.Hour), time.Minute)...)
	as := httptest.NewServer(a0)
	t.Cleanup(as.Close)
	log := filepath.Join(t.TempDir(), "audit.jsonl")
	tenant := fmt.Sprintf("bfa%08x", rand.Uint32())
	dlqEnv(t, tenant, "REDIS_URL", "redis://"+srv.Addr+"/0", "AUTHPIPE_ADMIN_AUDIT_LOG", log,
		"AUTH0_DOMAIN", as.URL, "AUTH0_CLIENT_SECRET", "bf-secret")
	code, out, errOut := runCLI("backfill", "--since", "2h")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	entries := auditEntries(t, log)
	require.Len(t, entries, 2)
	req, res := entries[0], entries[1]
	require.Equal(t, admin.OpBackfillStart, req["operation"])
	require.Equal(t, "os", req["auth"])
	require.Equal(t, []any{tenant}, req["tenants"])
	w := req["window"].(map[string]any)
	since, err := time.Parse(time.RFC3339Nano, w["since"].(string))
	require.NoError(t, err)
	require.InDelta(t, time.Now().Add(-2*time.Hour).Unix(), since.Unix(), 60)
	require.Nil(t, w["until"])
	require.Equal(t, map[string]any{"since": []any{"2h"}}, req["query"])
	require.Equal(t, "result", res["kind"])
	require.EqualValues(t, 30, res["affected"])
	require.EqualValues(t, 0, res["status"])
}
