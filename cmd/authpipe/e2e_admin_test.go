package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/sim"
	"github.com/authpipe/authpipe/internal/testredis"
)

const (
	e2eAdminIssuer   = "https://authpipe-e2e.eu.auth0.com/"
	e2eAdminAudience = "https://authpipe.example.com/admin"
	e2eStaticToken   = "e2e-static-token-DO-NOT-LOG-0123456789"
)

// TestE2EAdminAPI: the worker serves the admin API on its listener with
// Auth0-issued tokens from the JWKS simulator (and the static token), keeps
// /metrics and the probes open, re-drives a dead letter through it, and
// writes one audit entry per request to the audit log and the Redis stream,
// without a token anywhere.
func TestE2EAdminAPI(t *testing.T) {
	h := newHarness(t, testredis.Addr(t))
	jwks := sim.NewJWKS(sim.JWKSOptions{Issuer: e2eAdminIssuer, Audience: e2eAdminAudience})
	jwksSrv := httptest.NewServer(jwks)
	t.Cleanup(jwksSrv.Close)
	auditLog := filepath.Join(t.TempDir(), "audit.jsonl")
	h.extraEnv = append(h.extraEnv,
		"AUTHPIPE_ADMIN_AUDIENCE="+e2eAdminAudience,
		"AUTHPIPE_ADMIN_ISSUER="+e2eAdminIssuer,
		"AUTHPIPE_ADMIN_JWKS_URL="+jwksSrv.URL+sim.JWKSPath,
		"AUTHPIPE_ADMIN_STATIC_TOKEN="+e2eStaticToken,
		"AUTHPIPE_ADMIN_AUDIT_LOG="+auditLog,
		"AUTHPIPE_LOG_LEVEL=debug",
	)
	ids := h.addEvents(20)
	poison := ids[7]
	h.segment.RejectMessageID(h.tenant + "-" + poison)
	p := h.start()
	h.waitReady(p, 20*time.Second)
	require.Eventually(t, func() bool { return h.metric("authpipe_dead_letter_events") == 1 }, 60*time.Second, 100*time.Millisecond)

	var sent []string
	call := func(method, path, token string, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+h.listen+path, strings.NewReader(body))
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
			sent = append(sent, token)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(data)
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
	require.Equal(t, h.tenant, st.Tenants[0].Name)
	require.EqualValues(t, 1, st.Tenants[0].DeadLetters)
	require.NotEmpty(t, st.Tenants[0].Checkpoint)

	code, body = call("GET", "/api/v1/dlq", scoped(admin.ScopeReadDLQ), "")
	require.Equal(t, 200, code, body)
	var dl admin.DLQResponse
	require.NoError(t, json.Unmarshal([]byte(body), &dl))
	require.Len(t, dl.DeadLetters, 1)
	require.Equal(t, poison, dl.DeadLetters[0].LogID)

	// Fix the cause, replay: the event reaches Segment.
	h.segment.Reset()
	code, body = call("POST", "/api/v1/dlq/replay", scoped(admin.ScopeWriteDLQ), `{"ids":["`+dl.DeadLetters[0].ID+`"]}`)
	require.Equal(t, 200, code, body)
	require.JSONEq(t, `{"tenant":"`+h.tenant+`","replayed":1}`, body)
	h.waitDelivered([]string{poison}, 30*time.Second)
	require.Eventually(t, func() bool { return h.metric("authpipe_dead_letter_events") == 0 }, 10*time.Second, 100*time.Millisecond)

	code, body = call("GET", "/api/v1/rules", e2eStaticToken, "")
	require.Equal(t, 200, code, body)
	code, body = call("POST", "/api/v1/backfill", scoped(admin.ScopeWriteBackfill), `{"since":"`+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)+`"}`)
	require.NotContains(t, []int{401, 403}, code, body)

	const requests = 8
	var entries []map[string]any
	require.Eventually(t, func() bool {
		data, err := os.ReadFile(auditLog)
		if err != nil {
			return false
		}
		entries = nil
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			var e map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &e))
			entries = append(entries, e)
		}
		return len(entries) == requests
	}, 5*time.Second, 50*time.Millisecond)
	outcomes := map[string]int{}
	for _, e := range entries {
		for _, f := range []string{"time", "jti", "sub", "exp", "token_thumbprint", "method", "operation", "resource", "outcome", "status", "latency_seconds"} {
			require.Contains(t, e, f)
		}
		outcomes[e["outcome"].(string)]++
	}
	require.Equal(t, map[string]int{"denied": 3, "allowed": 5}, outcomes)
	for series, want := range map[string]float64{
		`authpipe_admin_requests_total{operation="status",outcome="denied"}`:      2,
		`authpipe_admin_requests_total{operation="status",outcome="allowed"}`:     1,
		`authpipe_admin_requests_total{operation="dlq_list",outcome="denied"}`:    1,
		`authpipe_admin_requests_total{operation="dlq_replay",outcome="allowed"}`: 1,
		`authpipe_admin_requests_total{operation="dlq_drop",outcome="allowed"}`:   0,
	} {
		require.Equal(t, want, h.metric(series), series)
	}

	stream, err := testredis.Client(t).XRange(context.Background(), "authpipe:{"+h.tenant+"}:audit", "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, stream, requests)

	// The dlq command of the same configuration sees what the API did.
	cmd := exec.Command(authpipeBin, "dlq", "list")
	cmd.Env = h.env()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "no dead letters")

	h.mu.Lock()
	logs := h.logs.String()
	h.mu.Unlock()
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
	h.requireNoSecretsLogged()
}
