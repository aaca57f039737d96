package auth0stream_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/testlogs"
)

// TestTenantShowsNoToken: a tenant of the receiver, printed or logged,
// shows its token as <secret>; it is revealed only to be hashed.
func TestTenantShowsNoToken(t *testing.T) {
	for _, out := range testlogs.Printed(auth0stream.Tenant{Name: "acme", Token: token}) {
		require.NotContains(t, out, "stream-token")
		require.Contains(t, out, "<secret>", out)
	}
}
