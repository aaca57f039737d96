package admin_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// TestConfigShowsNoSecret: the admin API's config, printed or logged,
// shows the static token and the secrets to mask as <secret>.
func TestConfigShowsNoSecret(t *testing.T) {
	cfg := admin.Config{StaticToken: "static-token-value-0123456789abcdef", Secrets: []config.Secret{"client-secret-value"}}
	for _, out := range testlogs.Printed(cfg) {
		require.NotContains(t, out, "static-token-value")
		require.NotContains(t, out, "client-secret-value")
		require.Contains(t, out, "<secret>", out)
	}
}
