package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	streamTok  = "Bearer S3cr3t-stream-0123456789abcdef0123"
	streamTok2 = "Bearer S3cr3t-stream-fedcba9876543210fedc"
)

// TestStreamFromEnv: the receiver's settings from the environment, the
// token also from its _FILE form; off by default, and then no token is
// needed.
func TestStreamFromEnv(t *testing.T) {
	cfg, err := Load(envFrom(validEnv()))
	require.NoError(t, err)
	require.False(t, cfg.Stream.Enabled())
	require.Equal(t, Stream{HealthyWindow: 2 * time.Minute, PollInterval: 5 * time.Minute}, cfg.Stream)

	cfg, err = Load(envFrom(with(validEnv(),
		"AUTHPIPE_STREAM_LISTEN", ":9465",
		"AUTH0_STREAM_TOKEN_FILE", writeFile(t, "token", streamTok+"\n"),
		"AUTHPIPE_STREAM_HEALTHY_WINDOW", "30s",
		"AUTHPIPE_STREAM_POLL_INTERVAL", "15m")))
	require.NoError(t, err)
	require.True(t, cfg.Stream.Enabled())
	require.Equal(t, Stream{Listen: ":9465", HealthyWindow: 30 * time.Second, PollInterval: 15 * time.Minute}, cfg.Stream)
	require.Equal(t, Secret(streamTok), cfg.Auth0.StreamToken)
	require.Equal(t, Secret(streamTok), cfg.AllTenants()[0].Auth0.StreamToken)
	require.NoError(t, cfg.Validate())

	// A token without the receiver is harmless.
	_, err = Load(envFrom(with(validEnv(), "AUTH0_STREAM_TOKEN", streamTok)))
	require.NoError(t, err)
}

// TestStreamProblems: each way the settings can leave the receiver open,
// colliding or polling too slowly is an error naming the setting, and no
// error quotes the token.
func TestStreamProblems(t *testing.T) {
	on := with(validEnv(), "AUTHPIPE_STREAM_LISTEN", ":9465", "AUTH0_STREAM_TOKEN", streamTok)
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"no token", without(on, "AUTH0_STREAM_TOKEN"),
			"config: AUTH0_STREAM_TOKEN is required when AUTHPIPE_STREAM_LISTEN is set (AUTH0_STREAM_TOKEN or AUTH0_STREAM_TOKEN_FILE): the Authorization Token of the tenant's Log Stream"},
		{"short token", with(on, "AUTH0_STREAM_TOKEN", "Bearer S3cr3t"),
			"config: AUTH0_STREAM_TOKEN: must be at least 32 characters (e.g. Bearer followed by the output of: openssl rand -hex 32)"},
		{"token with a line break inside", with(on, "AUTH0_STREAM_TOKEN", "Bearer S3cr3t\n0123456789abcdef0123456789"),
			"config: AUTH0_STREAM_TOKEN: must be printable ASCII: Auth0 sends it as an HTTP header (e.g. Bearer followed by the output of: openssl rand -hex 32)"},
		{"token with a leading space", with(on, "AUTH0_STREAM_TOKEN", " "+streamTok),
			"config: AUTH0_STREAM_TOKEN: must not begin or end with a space: HTTP drops it from the header (e.g. Bearer followed by the output of: openssl rand -hex 32)"},
		{"the metrics listener", with(on, "AUTHPIPE_STREAM_LISTEN", "0.0.0.0:9464"),
			`config: AUTHPIPE_STREAM_LISTEN: "0.0.0.0:9464" is the address of AUTHPIPE_LISTEN ":9464": the receiver needs a listener of its own (it faces the internet; /metrics and the admin API must not)`},
		{"not an address", with(on, "AUTHPIPE_STREAM_LISTEN", "9465"),
			`config: AUTHPIPE_STREAM_LISTEN: "9465" is not host:port with a numeric port (e.g. :9464 or 127.0.0.1:9464)`},
		{"faster than polling", with(on, "AUTHPIPE_STREAM_POLL_INTERVAL", "5s"),
			`config: AUTHPIPE_STREAM_POLL_INTERVAL: 5s is shorter than the poll interval 10s of tenant "default" (AUTH0_POLL_INTERVAL): polling while the stream is healthy should be slower, not faster`},
		{"beyond the retention", with(on, "AUTH0_LOG_RETENTION", "1h", "AUTHPIPE_STREAM_POLL_INTERVAL", "45m"),
			`config: AUTHPIPE_STREAM_POLL_INTERVAL: 45m is more than half the log retention 1h of tenant "default" (AUTH0_LOG_RETENTION): logs the stream missed could expire before a poll`},
		{"poll interval out of range", with(on, "AUTHPIPE_STREAM_POLL_INTERVAL", "2h"),
			"config: AUTHPIPE_STREAM_POLL_INTERVAL: 2h must be between 100ms and 1h"},
		{"window out of range", with(on, "AUTHPIPE_STREAM_HEALTHY_WINDOW", "1s"),
			"config: AUTHPIPE_STREAM_HEALTHY_WINDOW: 1s must be between 10s and 24h"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireLoadError(t, tc.env, tc.want)
		})
	}
	cfg, err := Load(envFrom(on))
	require.NoError(t, err)
	cfg.Auth0.StreamToken = ""
	require.ErrorContains(t, cfg.Validate(), "AUTH0_STREAM_TOKEN is required when AUTHPIPE_STREAM_LISTEN is set")
}

const streamTenantsYAML = `stream:
  listen: 127.0.0.1:9465
tenants:
  - name: acme-eu
    auth0:
      domain: acme.eu.auth0.com
      client_id: acme-client
      client_secret: S3cr3t-acme
  - name: beta
    auth0:
      domain: beta.us.auth0.com
      client_id: beta-client
      client_secret: S3cr3t-beta
      stream_token: ` + streamTok2 + `
segment:
  write_key: S3cr3t-write
`

// TestStreamTenants: with a tenants list each tenant brings its own token,
// from the file or AUTH0_STREAM_TOKEN_<NAME>(_FILE); a missing one, a
// shared one and the top-level one are errors.
func TestStreamTenants(t *testing.T) {
	path := writeFile(t, "authpipe.yml", streamTenantsYAML)
	cfg, err := Load(envFrom(map[string]string{"AUTHPIPE_CONFIG": path, "AUTH0_STREAM_TOKEN_ACME_EU": streamTok}))
	require.NoError(t, err)
	ts := cfg.AllTenants()
	require.Equal(t, Secret(streamTok), ts[0].Auth0.StreamToken)
	require.Equal(t, Secret(streamTok2), ts[1].Auth0.StreamToken)
	require.NoError(t, cfg.Validate())

	requireLoadError(t, map[string]string{"AUTHPIPE_CONFIG": path},
		"config: tenants[0].auth0.stream_token is required when AUTHPIPE_STREAM_LISTEN is set (in the file, or AUTH0_STREAM_TOKEN_ACME_EU or AUTH0_STREAM_TOKEN_ACME_EU_FILE): the Authorization Token of the tenant's Log Stream")
	requireLoadError(t, map[string]string{"AUTHPIPE_CONFIG": path, "AUTH0_STREAM_TOKEN_ACME_EU": streamTok2},
		`config: tenants[1].auth0.stream_token is also the stream token of tenant "acme-eu": give each tenant's stream its own, or one could write into the other's buffer`)
	requireLoadError(t, map[string]string{"AUTHPIPE_CONFIG": path, "AUTH0_STREAM_TOKEN_ACME_EU": streamTok, "AUTH0_STREAM_TOKEN": streamTok},
		"config: AUTH0_STREAM_TOKEN: not used when "+path+" lists tenants: set tenants[].auth0.stream_token for each tenant instead")
	requireLoadError(t, map[string]string{"AUTHPIPE_CONFIG": path, "AUTH0_STREAM_TOKEN_ACME_EU": "Bearer S3cr3t-short"},
		"config: AUTH0_STREAM_TOKEN_ACME_EU: must be at least 32 characters (e.g. Bearer followed by the output of: openssl rand -hex 32)")
}

// TestSameListener: addresses collide on the same port with the same or a
// wildcard host.
func TestSameListener(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{":9464", ":9464", true},
		{"0.0.0.0:9464", "127.0.0.1:9464", true},
		{"[::]:9464", ":9464", true},
		{"127.0.0.1:9464", "127.0.0.1:9464", true},
		{"127.0.0.1:9464", "10.0.0.1:9464", false},
		{":9465", ":9464", false},
		{"bad", ":9464", false},
	} {
		require.Equal(t, tc.same, sameListener(tc.a, tc.b), "%s %s", tc.a, tc.b)
	}
}
