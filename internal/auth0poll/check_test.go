package auth0poll

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCheckAccess: the token's granted scopes and one logs request, as
// `authpipe check` reports them; no text carries the secret.
func TestCheckAccess(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()

	a := CheckAccess(ctx, h.config())
	require.NoError(t, a.TokenErr)
	require.True(t, a.ScopesKnown)
	require.Equal(t, []string{"read:logs", "read:logs_users"}, a.Scopes)
	require.True(t, a.HasReadLogs())
	require.Equal(t, http.StatusOK, a.LogsStatus)
	require.NoError(t, a.LogsErr)

	cfg := h.config()
	cfg.ClientSecret = testSecret + "-wrong"
	a = CheckAccess(ctx, cfg)
	require.ErrorContains(t, a.TokenErr, "401")
	require.ErrorContains(t, a.TokenErr, "access_denied")
	require.NotContains(t, a.TokenErr.Error(), testSecret)
	require.Zero(t, a.LogsStatus, "no token, no logs request")

	h.auth0.SetScopes("read:users")
	a = CheckAccess(ctx, h.config())
	require.NoError(t, a.TokenErr)
	require.Equal(t, []string{"read:users"}, a.Scopes)
	require.False(t, a.HasReadLogs())
	require.Equal(t, http.StatusForbidden, a.LogsStatus)
	require.EqualError(t, a.LogsErr, "GET /api/v2/logs?take=1 answered 403 Forbidden: Insufficient scope, expected any of: read:logs,read:logs_users (insufficient_scope)")

	cfg = h.config()
	cfg.Domain = "http://127.0.0.1:1"
	a = CheckAccess(ctx, cfg)
	require.ErrorContains(t, a.TokenErr, "POST /oauth/token")
	require.ErrorContains(t, a.TokenErr, "connection refused")
}
