// Package admin tests the admin API and its audit trail end to end:
// `authpipe run` serving the API with tokens from the JWKS simulator,
// re-driving a dead letter, writing one audit entry per request (file and
// Redis stream) that `authpipe audit verify` accepts, refusing requests
// when no audit sink takes their entry, and a real Prometheus firing the
// shipped AuthpipeAuditWriteFailing with the labels the metric carries.
package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/e2etest"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

var authpipeBin string

func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "", &authpipeBin)) }

const (
	e2eAdminIssuer   = "https://authpipe-e2e.eu.auth0.com/"
	e2eAdminAudience = "https://authpipe.example.com/admin"
)

// TestE2EAdminAPI: the worker serves the admin API on its listener with
// Auth0-issued tokens from the JWKS simulator (and the static token), keeps
// /metrics and the probes open, re-drives a dead letter through it, and
// writes one audit entry per request to the audit log and the Redis stream,
// without a token anywhere.
func TestE2EAdminAPI(t *testing.T) {
	// A Redis of its own: the audit stream is one for the deployment.
	rsrv := testredis.Start(t)
	h := e2etest.NewHarness(t, authpipeBin, rsrv.Addr)
	jwks := sim.NewJWKS(sim.JWKSOptions{Issuer: e2eAdminIssuer, Audience: e2eAdminAudience})
	jwksSrv := httptest.NewServer(jwks)
	t.Cleanup(jwksSrv.Close)
	auditLog := filepath.Join(t.TempDir(), "audit.jsonl")
	h.ExtraEnv = append(h.ExtraEnv,
		"AUTHPIPE_ADMIN_AUDIENCE="+e2eAdminAudience,
		"AUTHPIPE_ADMIN_ISSUER="+e2eAdminIssuer,
		"AUTHPIPE_ADMIN_JWKS_URL="+jwksSrv.URL+sim.JWKSPath,
		"AUTHPIPE_ADMIN_STATIC_TOKEN="+e2etest.AdminStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG="+auditLog,
		"AUTHPIPE_LOG_LEVEL=debug",
		"AUTHPIPE_HTTP_READ_TIMEOUT=1s",
	)
	poison := startWithDeadLetter(h, 20, 7)

	var sent []string
	call := func(method, path, token string, body string) (int, string) {
		t.Helper()
		if token != "" {
			sent = append(sent, token)
		}
		return adminCall(t, h.Listen, method, path, token, body)
	}
	scoped := func(scopes ...string) string {
		return jwks.MintToken(sim.Claims{"scope": strings.Join(scopes, " ")})
	}

	// Open: metrics and probes. Closed: the admin API.
	code, _ := call("GET", "/metrics", "", "")
	require.Equal(t, 200, code)
	code, _ = call("GET", "/-/healthy", "", "")
	require.Equal(t, 200, code)
	code, _ = call("GET", "/api/v1/status", "", "")
	require.Equal(t, 401, code)
	code, _ = call("GET", "/api/v1/status", jwks.AlgNone(sim.Claims{"scope": "read:status"}), "")
	require.Equal(t, 401, code)
	code, _ = call("GET", "/api/v1/dlq", scoped(admin.ScopeReadStatus), "")
	require.Equal(t, 403, code)

	code, body := call("GET", "/api/v1/status", scoped(admin.ScopeReadStatus), "")
	require.Equal(t, 200, code, body)
	var st admin.StatusResponse
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Len(t, st.Tenants, 1)
	require.Equal(t, h.Tenant, st.Tenants[0].Name)
	require.EqualValues(t, 1, st.Tenants[0].DeadLetters)
	require.NotEmpty(t, st.Tenants[0].Checkpoint)

	code, body = call("GET", "/api/v1/dlq", scoped(admin.ScopeReadDLQ), "")
	require.Equal(t, 200, code, body)
	var dl admin.DLQResponse
	require.NoError(t, json.Unmarshal([]byte(body), &dl))
	require.Len(t, dl.DeadLetters, 1)
	require.Equal(t, poison, dl.DeadLetters[0].LogID)

	// Fix the cause, replay: the event reaches Segment.
	h.Segment.Reset()
	code, body = call("POST", "/api/v1/dlq/replay", scoped(admin.ScopeWriteDLQ), `{"ids":["`+dl.DeadLetters[0].ID+`"]}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"tenant":"`+h.Tenant+`","replayed":1}`, body)
	h.WaitDelivered([]string{poison}, 30*time.Second)
	require.Eventually(t, func() bool { return h.Metric("authpipe_dead_letter_events") == 0 }, 10*time.Second, 100*time.Millisecond)

	code, body = call("GET", "/api/v1/rules", e2etest.AdminStaticToken, "")
	require.Equal(t, 200, code, body)
	// The static token pasted into a URL is masked in the trail.
	code, body = call("GET", "/api/v1/dlq?tenant="+e2etest.AdminStaticToken, e2etest.AdminStaticToken, "")
	require.Equal(t, 404, code, body)
	code, body = call("POST", "/api/v1/backfill", scoped(admin.ScopeWriteBackfill), `{"since":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`)
	require.NotContains(t, []int{401, 403}, code, body)

	// One request entry per request (changes also have a result entry,
	// with the same id), to the file and the stream, chained.
	const requests = 9
	var entries []map[string]any
	byID := map[any][]map[string]any{}
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(auditLog)
		if err != nil {
			return false
		}
		entries, byID = nil, map[any][]map[string]any{}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var e map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
			entries = append(entries, e)
			byID[e["id"]] = append(byID[e["id"]], e)
		}
		return len(byID) == requests
	}, 5*time.Second, 50*time.Millisecond)
	outcomes := map[string]int{}
	for _, group := range byID {
		e := group[0]
		require.Equal(t, "request", e["kind"])
		for _, f := range []string{"seq", "prev", "id", "time", "host", "remote_addr", "jti", "sub", "exp", "token_thumbprint", "method", "path", "query", "operation", "resource", "outcome", "status", "latency_seconds"} {
			require.Contains(t, e, f)
		}
		outcomes[e["outcome"].(string)]++
	}
	require.Equal(t, map[string]int{"denied": 3, "allowed": 6}, outcomes)
	for _, e := range entries {
		if e["operation"] == admin.OpDLQReplay && e["kind"] == "request" {
			require.Equal(t, []any{map[string]any{"id": dl.DeadLetters[0].ID, "log_id": poison}}, e["records"])
		}
		if e["operation"] == admin.OpDLQList && e["status"] == 404.0 {
			require.Equal(t, "tenants/<masked>/dlq", e["resource"])
			require.Equal(t, map[string]any{"tenant": []any{"<masked>"}}, e["query"])
		}
	}
	for series, want := range map[string]float64{
		`authpipe_admin_requests_total{operation="status",outcome="denied"}`:      2,
		`authpipe_admin_requests_total{operation="status",outcome="allowed"}`:     1,
		`authpipe_admin_requests_total{operation="dlq_list",outcome="denied"}`:    1,
		`authpipe_admin_requests_total{operation="dlq_replay",outcome="allowed"}`: 1,
		`authpipe_admin_requests_total{operation="dlq_drop",outcome="allowed"}`:   0,
		`authpipe_admin_audit_errors_total{sink="log"}`:                           0,
		`authpipe_admin_audit_errors_total{sink="redis"}`:                         0,
	} {
		require.Equal(t, want, h.Metric(series), series)
	}

	rdb := redis.NewClient(&redis.Options{Addr: rsrv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	stream, err := rdb.XRange(context.Background(), audit.DefaultKeys.Stream, "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, stream, len(entries))
	verify := exec.Command(authpipeBin, "audit", "verify")
	verify.Env = h.Env()
	out, err := verify.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), auditLog+": ok: ")
	require.Contains(t, string(out), audit.DefaultKeys.Stream+": ok: ")

	// A client sending its body one byte at a time, with a valid token,
	// is cut off within AUTHPIPE_HTTP_READ_TIMEOUT (1s).
	c, err := net.Dial("tcp", h.Listen)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	_, err = io.WriteString(c, "POST /api/v1/dlq/drop HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+e2etest.AdminStaticToken+"\r\nContent-Length: 100\r\n\r\n{")
	require.NoError(t, err)
	cut := make(chan time.Duration, 1)
	go func() { _, _ = io.Copy(io.Discard, c); cut <- time.Since(start) }()
	var took time.Duration
	giveUp := time.NewTimer(15 * time.Second)
	defer giveUp.Stop()
slow:
	for {
		select {
		case took = <-cut:
			break slow
		case <-time.After(200 * time.Millisecond):
			_, _ = c.Write([]byte(" "))
		case <-giveUp.C:
			t.Fatal("a slow body was not cut off")
		}
	}
	require.Less(t, took, 4*time.Second)

	// The dlq command of the same configuration sees what the API did.
	cmd := exec.Command(authpipeBin, "dlq", "list")
	cmd.Env = h.Env()
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "no dead letters")

	logs := h.Logs()
	data, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	var streamText strings.Builder
	for _, m := range stream {
		streamText.WriteString(m.Values["entry"].(string))
	}
	for _, tok := range sent {
		for where, text := range map[string]string{"logs": logs, "audit log": string(data), "audit stream": streamText.String()} {
			require.NotContains(t, text, tok, "a token reached the %s", where)
			if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) > 16 {
				require.NotContains(t, text, parts[2], "a token's signature reached the %s", where)
			}
		}
	}
	require.Contains(t, logs, "admin API enabled")
	h.RequireNoSecretsLogged()
}

// TestE2EAuditFailClosed is the fail-open reproduction against the
// real worker: the audit log on /dev/full and the Redis audit key replaced
// by a string. GET /api/v1/dlq?raw=true and POST /api/v1/dlq/drop
// {"all":true} are refused with 503, no data is served and the dead letter
// stays; once the stream is back the refusals are written to it without
// another request (the worker retries what a sink kept), and the chain
// verifies.
func TestE2EAuditFailClosed(t *testing.T) {
	rsrv := testredis.Start(t)
	h := e2etest.NewHarness(t, authpipeBin, rsrv.Addr)
	h.ExtraEnv = append(h.ExtraEnv,
		"AUTHPIPE_ADMIN_STATIC_TOKEN="+e2etest.AdminStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG=/dev/full",
	)
	poison := startWithDeadLetter(h, 10, 3)
	rdb := redis.NewClient(&redis.Options{Addr: rsrv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	require.NoError(t, rdb.Set(ctx, audit.DefaultKeys.Stream, "not a stream", 0).Err())

	call := func(method, path, body string) (int, string) {
		t.Helper()
		return adminCall(t, h.Listen, method, path, e2etest.AdminStaticToken, body)
	}
	code, body := call("GET", "/api/v1/dlq?raw=true", "")
	require.Equal(t, 503, code, body)
	require.Contains(t, body, "audit_unavailable")
	require.NotContains(t, body, poison, "no data served")
	code, body = call("POST", "/api/v1/dlq/drop", `{"all":true}`)
	require.Equal(t, 503, code, body)
	n, err := rdb.XLen(ctx, "authpipe:{"+h.Tenant+"}:dlq").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "the dead letter is kept")
	require.Equal(t, 1.0, h.Metric(`authpipe_admin_requests_total{operation="dlq_list",outcome="refused"}`))
	require.Equal(t, 1.0, h.Metric(`authpipe_admin_requests_total{operation="dlq_drop",outcome="refused"}`))
	require.GreaterOrEqual(t, h.Metric(`authpipe_admin_audit_errors_total{sink="log"}`), 2.0)
	require.GreaterOrEqual(t, h.Metric(`authpipe_admin_audit_errors_total{sink="redis"}`), 2.0)

	// The stream is back: the refusals appear with no further request.
	require.NoError(t, rdb.Del(ctx, audit.DefaultKeys.Stream).Err())
	var msgs []redis.XMessage
	require.Eventually(t, func() bool {
		msgs, err = rdb.XRange(ctx, audit.DefaultKeys.Stream, "-", "+").Result()
		return err == nil && len(msgs) == 2
	}, 15*time.Second, 100*time.Millisecond)
	for i, op := range []string{admin.OpDLQList, admin.OpDLQDrop} {
		var e map[string]any
		require.NoError(t, json.Unmarshal([]byte(msgs[i].Values["entry"].(string)), &e))
		require.Equal(t, op, e["operation"])
		require.Equal(t, "refused", e["outcome"])
		require.Equal(t, "audit_unavailable", e["reason"])
		require.EqualValues(t, 503, e["status"])
		require.Equal(t, "static", e["auth"])
	}
	require.Equal(t, 0.0, h.Metric(`authpipe_admin_audit_pending_entries{sink="redis"}`))
	code, body = call("GET", "/api/v1/dlq", "")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, poison)
	verify := exec.Command(authpipeBin, "audit", "verify", "--redis")
	verify.Env = h.Env()
	out, err := verify.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "ok: 3 entries")
}

// startWithDeadLetter starts authpipe on n new events of which the one at
// index poison Segment rejects, and waits until it is dead-lettered. It
// returns that event's log_id.
func startWithDeadLetter(h *e2etest.Harness, n, poison int) string {
	h.T.Helper()
	ids := h.AddEvents(n)
	h.Segment.RejectMessageID(h.Tenant + "-" + ids[poison])
	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	require.Eventually(h.T, func() bool { return h.Metric("authpipe_dead_letter_events") == 1 }, 60*time.Second, 100*time.Millisecond)
	return ids[poison]
}

// adminCall sends an admin API request with the Bearer token ("" for
// none) and returns the status and body.
func adminCall(t *testing.T, addr, method, path, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(data)
}

// TestE2EPrometheusFiresAuditWriteFailing: a real Prometheus scraping a
// real worker whose audit log is on /dev/full fires the shipped
// AuthpipeAuditWriteFailing (its for: set to 0s) with the labels the
// metric really carries, for the log sink only.
func TestE2EPrometheusFiresAuditWriteFailing(t *testing.T) {
	e2etest.NeedTool(t, "prometheus")
	h := e2etest.NewHarness(t, authpipeBin, testredis.Addr(t))
	h.ExtraEnv = append(h.ExtraEnv,
		"AUTHPIPE_ADMIN_STATIC_TOKEN="+e2etest.AdminStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG=/dev/full",
	)
	h.AddEvents(5)
	p := h.Start()
	h.WaitReady(p, 20*time.Second)
	prom, _ := e2etest.StartPrometheusWithShippedRules(t, h.Listen)
	// The Redis stream takes the entry: served. The log keeps failing.
	code, body := adminCall(t, h.Listen, "GET", "/api/v1/status", e2etest.AdminStaticToken, "")
	require.Equal(t, 200, code, body)

	type alert struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		State       string            `json:"state"`
	}
	var alerts []alert
	var got *alert
	e2etest.WaitFor(t, 60*time.Second, func() bool {
		var data struct {
			Alerts []alert `json:"alerts"`
		}
		prom.API(t, "/api/v1/alerts", &data)
		alerts, got = data.Alerts, nil
		for i, a := range alerts {
			if a.Labels["alertname"] == "AuthpipeAuditWriteFailing" && a.State == "firing" {
				got = &alerts[i]
			}
		}
		return got != nil
	}, func() string {
		return fmt.Sprintf("AuthpipeAuditWriteFailing firing; alerts %+v; errors %v", alerts, h.Metric(`authpipe_admin_audit_errors_total{sink="log"}`))
	})
	require.Equal(t, map[string]string{
		"alertname": "AuthpipeAuditWriteFailing", "severity": "critical", "sink": "log", "job": "authpipe", "instance": h.Listen,
	}, got.Labels)
	require.Contains(t, got.Annotations["description"], "audit log (AUTHPIPE_ADMIN_AUDIT_LOG)")
	require.Equal(t, "https://github.com/authpipe/authpipe/blob/main/docs/runbook.md#authpipeauditwritefailing", got.Annotations["runbook_url"])
	for _, a := range alerts {
		if a.Labels["alertname"] == "AuthpipeAuditWriteFailing" {
			require.Equal(t, "log", a.Labels["sink"], "the Redis stream works")
		}
	}
}
