package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const tenantsYAML = `auth0:
  poll_interval: 20s
  page_size: 50
tenants:
  - name: acme-eu
    auth0:
      domain: acme.eu.auth0.com
      client_id: acme-client
  - name: beta
    auth0:
      domain: http://127.0.0.1:8080
      client_id: beta-client
      client_secret: S3cr3t-beta-file
      poll_interval: 5s
      log_retention: 720h
      rate_limit_share: 0.5
    segment:
      write_key: S3cr3t-beta-write
`

func TestLoadTenants(t *testing.T) {
	path := writeFile(t, "authpipe.yml", tenantsYAML)
	secretFile := writeFile(t, "acme", "S3cr3t-acme-from-file\n")
	cfg, err := Load(envFrom(map[string]string{
		"AUTHPIPE_CONFIG":                     path,
		"AUTH0_CLIENT_SECRET_ACME_EU_FILE":    secretFile,
		"SEGMENT_WRITE_KEY":                   "S3cr3t-shared-write",
		"AUTH0_POLL_INTERVAL":                 "30s", // top level: the default of every tenant
		"AUTH0_REQUEST_TIMEOUT":               "7s",
		"AUTHPIPE_CONSUMER":                   "replica-1",
		"AUTH0_CLIENT_SECRET_SOMEONE_ELSE":    "ignored: no such tenant",
		"SEGMENT_WRITE_KEY_ACME_EU_IS_UNUSED": "ignored",
	}))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, []Tenant{
		{
			Name: "acme-eu",
			Auth0: Auth0{
				Domain: "acme.eu.auth0.com", ClientID: "acme-client", ClientSecret: "S3cr3t-acme-from-file",
				LogRetention: 144 * time.Hour, PollInterval: 30 * time.Second, RequestTimeout: 7 * time.Second, PageSize: 50,
				RateLimitShare: 0.8,
			},
			WriteKey: "S3cr3t-shared-write",
		},
		{
			Name: "beta",
			Auth0: Auth0{
				Domain: "http://127.0.0.1:8080", ClientID: "beta-client", ClientSecret: "S3cr3t-beta-file",
				LogRetention: 720 * time.Hour, PollInterval: 5 * time.Second, RequestTimeout: 7 * time.Second, PageSize: 50,
				RateLimitShare: 0.5,
			},
			WriteKey: "S3cr3t-beta-write",
		},
	}, cfg.Tenants)
	require.Equal(t, cfg.Tenants, cfg.AllTenants())

	// A tenant's view: its own Auth0 and write key, everything else shared.
	beta := cfg.ForTenant(cfg.Tenants[1])
	require.Equal(t, "beta", beta.Tenant)
	require.Equal(t, cfg.Tenants[1].Auth0, beta.Auth0)
	require.Equal(t, Secret("S3cr3t-beta-write"), beta.Segment.WriteKey)
	require.Equal(t, "replica-1", beta.Buffer.Consumer)
	require.Empty(t, beta.Tenants)
	require.NoError(t, beta.Validate())
	require.NotEqual(t, cfg.ForTenant(cfg.Tenants[0]).AnonymousIDKey(), beta.AnonymousIDKey(),
		"the derived anonymousId key follows the tenant's write key")

	// The environment wins over the file for a tenant's secret too.
	cfg, err = Load(envFrom(map[string]string{
		"AUTHPIPE_CONFIG":             path,
		"AUTH0_CLIENT_SECRET_ACME_EU": "S3cr3t-a",
		"AUTH0_CLIENT_SECRET_BETA":    "S3cr3t-beta-env",
		"SEGMENT_WRITE_KEY_ACME_EU":   "S3cr3t-acme-write",
	}))
	require.NoError(t, err)
	require.Equal(t, Secret("S3cr3t-beta-env"), cfg.Tenants[1].Auth0.ClientSecret)
	require.Equal(t, Secret("S3cr3t-acme-write"), cfg.Tenants[0].WriteKey)
	require.Equal(t, Secret("S3cr3t-beta-write"), cfg.Tenants[1].WriteKey)
}

func TestAllTenantsWithoutList(t *testing.T) {
	cfg, err := Load(envFrom(validEnv()))
	require.NoError(t, err)
	require.Empty(t, cfg.Tenants)
	require.Equal(t, []Tenant{{Name: "default", Auth0: cfg.Auth0, WriteKey: cfg.Segment.WriteKey}}, cfg.AllTenants())
	require.Equal(t, cfg, cfg.ForTenant(cfg.AllTenants()[0]))
}

func TestLoadTenantsErrors(t *testing.T) {
	two := func(a, b string) string {
		return "tenants:\n" +
			"  - name: " + a + "\n    auth0: {domain: a.auth0.com, client_id: a, client_secret: S3cr3t-a}\n" +
			"  - name: " + b + "\n    auth0: {domain: b.auth0.com, client_id: b, client_secret: S3cr3t-b}\n"
	}
	tests := []struct {
		name string
		yaml string
		env  map[string]string // added to SEGMENT_WRITE_KEY
		want string            // {f} is the file
	}{
		{"top-level domain from the environment", two("a", "b"), map[string]string{"AUTH0_DOMAIN": "x.auth0.com"},
			"AUTH0_DOMAIN: not used when {f} lists tenants: set tenants[].auth0.domain for each tenant instead"},
		{"top-level tenant and secret in the file", "tenant: x\nauth0:\n  client_secret: S3cr3t-top\n" + two("a", "b"), nil,
			"{f}:1: tenant (AUTHPIPE_TENANT): not used when {f} lists tenants: set tenants[].name for each tenant instead; " +
				"{f}:3: auth0.client_secret (AUTH0_CLIENT_SECRET): not used when {f} lists tenants: set tenants[].auth0.client_secret for each tenant instead"},
		{"duplicate name", two("acme", "acme"), nil,
			`{f}:4: tenants[1].name: "acme" is also the name of tenants[0]`},
		{"names with the same variables", two("a-b", "a_b"), nil,
			`{f}:4: tenants[1].name: "a_b" and tenants[0]'s name give the same secret variables (AUTH0_CLIENT_SECRET_A_B): rename one`},
		{"reserved name", two("file", "b"), nil,
			`{f}:2: tenants[0].name: "file" is reserved: its secret variables would be AUTH0_CLIENT_SECRET_FILE and SEGMENT_WRITE_KEY_FILE`},
		{"secret and its file", two("a", "b"), map[string]string{"AUTH0_CLIENT_SECRET_B": "S3cr3t-1", "AUTH0_CLIENT_SECRET_B_FILE": "/nope"},
			"AUTH0_CLIENT_SECRET_B and AUTH0_CLIENT_SECRET_B_FILE are both set; set only one"},
		{"secret file missing", two("a", "b"), map[string]string{"AUTH0_CLIENT_SECRET_A_FILE": "/nonexistent/secret"},
			"AUTH0_CLIENT_SECRET_A_FILE: open /nonexistent/secret: no such file or directory"},
		{"no write key anywhere", two("a", "b"), map[string]string{"SEGMENT_WRITE_KEY": "", "SEGMENT_WRITE_KEY_A": "S3cr3t-w"},
			"{f}:4: tenants[1].segment.write_key is required (in the file, or SEGMENT_WRITE_KEY_B or SEGMENT_WRITE_KEY_B_FILE, or SEGMENT_WRITE_KEY for every tenant)"},
		{"shared setting inside a tenant", "tenants:\n  - name: a\n    listen: :1\n    auth0: {domain: a.auth0.com, client_id: a, client_secret: S3cr3t-a}\n", nil,
			"{f}:3: listen is shared by all tenants: set it at the top level, not in tenants[0]"},
		{"misspelt tenant key", "tenants:\n  - nme: a\n    name: a\n    auth0: {domain: a.auth0.com, client_id: a, client_secret: S3cr3t-a}\n", nil,
			`{f}:2: field "nme" not found in tenants[0] (did you mean "name"?)`},
		{"not a list", "tenants:\n  acme: {}\n", nil,
			"{f}:1: tenants must be a list of tenants (name, auth0, segment), found a mapping"},
		{"bad value from the environment", two("a", "b"), map[string]string{"AUTH0_CLIENT_SECRET_A": "\n"},
			""}, // an empty value is unset: the file's stays
		{"bad domain", "tenants:\n  - name: a\n    auth0: {domain: 'ftp://x', client_id: a, client_secret: S3cr3t-a}\n", nil,
			"{f}:3: tenants[0].auth0.domain: must be a host name or an http:// or https:// URL (e.g. tenant.eu.auth0.com, https://tenant.eu.auth0.com or http://127.0.0.1:8080)"},
		{"duplicate key in a tenant", "tenants:\n  - name: a\n    name: b\n    auth0: {domain: a.auth0.com, client_id: a, client_secret: S3cr3t-a}\n", nil,
			"{f}:3: tenants[0].name is set twice (first at line 2)"},
		{"an empty list is no list", "tenants: []\n", map[string]string{"AUTH0_DOMAIN": "a.auth0.com", "AUTH0_CLIENT_ID": "a", "AUTH0_CLIENT_SECRET": "S3cr3t-a"},
			""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "cfg.yml", tt.yaml)
			env := map[string]string{"AUTHPIPE_CONFIG": path, "SEGMENT_WRITE_KEY": "S3cr3t-w"}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.want == "" {
				_, err := Load(envFrom(env))
				require.NoError(t, err)
				return
			}
			requireLoadError(t, env, "config: "+strings.ReplaceAll(tt.want, "{f}", path))
		})
	}
}

func TestValidateTenantsHandBuilt(t *testing.T) {
	c := Default()
	c.Segment.WriteKey = "k"
	good := Tenant{Name: "a", Auth0: c.Auth0, WriteKey: "k"}
	good.Auth0.Domain, good.Auth0.ClientID, good.Auth0.ClientSecret = "a.auth0.com", "id", "s"
	c.Tenants = []Tenant{good}
	require.NoError(t, c.Validate(), "top-level Auth0 settings are not needed with tenants")

	bad := good
	bad.Name = "a"
	bad.Auth0.PageSize = 0
	bad.WriteKey = ""
	c.Segment.WriteKey = ""
	c.Tenants = append(c.Tenants, bad)
	require.EqualError(t, c.Validate(), `config: tenants[1].name: "a" is not unique (names must differ also with - read as _ and in upper case); `+
		"tenants[1].auth0.page_size: 0 must be between 1 and 100; tenants[1].segment.write_key is required")
}

// TestCheckTenant is the one tenant-name rule every component checks.
func TestCheckTenant(t *testing.T) {
	for _, ok := range []string{"a", "0", "acme", "acme-eu_1", strings.Repeat("a", 32)} {
		require.NoError(t, CheckTenant(ok), ok)
	}
	for _, bad := range []string{"", "Acme", "-a", "_a", "a b", "a}b", "a.b", strings.Repeat("a", 33), "é"} {
		err := CheckTenant(bad)
		require.EqualError(t, err, `must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`, bad)
	}
}
