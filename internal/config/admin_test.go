package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdminSettings(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantErr     string
		wantEnabled bool
		wantIssuer  string
		wantJWKS    string
	}{
		{name: "off by default", env: validEnv(), wantIssuer: "https://acme.eu.auth0.com/", wantJWKS: "https://acme.eu.auth0.com/.well-known/jwks.json"},
		{name: "audience: issuer and JWKS from the domain", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "https://authpipe.example.com/admin"),
			wantEnabled: true, wantIssuer: "https://acme.eu.auth0.com/", wantJWKS: "https://acme.eu.auth0.com/.well-known/jwks.json"},
		{name: "simulator domain", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "api", "AUTH0_DOMAIN", "http://127.0.0.1:8080"),
			wantEnabled: true, wantIssuer: "http://127.0.0.1:8080/", wantJWKS: "http://127.0.0.1:8080/.well-known/jwks.json"},
		{name: "custom issuer", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "api", "AUTHPIPE_ADMIN_ISSUER", "https://login.example.com/"),
			wantEnabled: true, wantIssuer: "https://login.example.com/", wantJWKS: "https://login.example.com/.well-known/jwks.json"},
		{name: "custom JWKS", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "api", "AUTHPIPE_ADMIN_JWKS_URL", "https://keys.example.com/jwks"),
			wantEnabled: true, wantIssuer: "https://acme.eu.auth0.com/", wantJWKS: "https://keys.example.com/jwks"},
		{name: "static token", env: with(validEnv(), "AUTHPIPE_ADMIN_STATIC_TOKEN", "S3cr3t-static-token-0123456789abcdef"),
			wantEnabled: true, wantIssuer: "https://acme.eu.auth0.com/", wantJWKS: "https://acme.eu.auth0.com/.well-known/jwks.json"},
		{name: "short static token", env: with(validEnv(), "AUTHPIPE_ADMIN_STATIC_TOKEN", "S3cr3t-short"),
			wantErr: "config: AUTHPIPE_ADMIN_STATIC_TOKEN: must be at least 32 characters (e.g. the output of: openssl rand -hex 32)"},
		{name: "static token with a space", env: with(validEnv(), "AUTHPIPE_ADMIN_STATIC_TOKEN", "S3cr3t static token 0123456789abcdef"),
			wantErr: "config: AUTHPIPE_ADMIN_STATIC_TOKEN: must be printable ASCII without spaces (e.g. the output of: openssl rand -hex 32)"},
		{name: "audience with a space", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "my api"),
			wantErr: "config: AUTHPIPE_ADMIN_AUDIENCE: must not contain spaces or control characters"},
		{name: "issuer not a URL", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIENCE", "api", "AUTHPIPE_ADMIN_ISSUER", "acme.eu.auth0.com"),
			wantErr: "config: AUTHPIPE_ADMIN_ISSUER: must be an http:// or https:// URL (e.g. https://your-tenant.eu.auth0.com/)"},
		{name: "audit retention too short", env: with(validEnv(), "AUTHPIPE_ADMIN_AUDIT_RETENTION", "10m"),
			wantErr: "config: AUTHPIPE_ADMIN_AUDIT_RETENTION: 10m must be at least 1h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(envFrom(tt.env))
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "S3cr3t")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantEnabled, cfg.Admin.Enabled())
			require.Equal(t, tt.wantIssuer, cfg.AdminIssuer())
			require.Equal(t, tt.wantJWKS, cfg.AdminJWKSURL())
		})
	}
}

// TestSecrets lists every secret set, the Redis password on its own too,
// for masking in the audit trail and the log.
func TestSecrets(t *testing.T) {
	c := Default()
	c.Auth0.ClientSecret = "client-secret-value"
	c.Segment.WriteKey = "write-key-value"
	c.Redis.URL = "redis://:redis-pass-value@redis:6379/0"
	c.Admin.StaticToken = "static-token-value-0123456789abcdef"
	c.Tenants = []Tenant{{Name: "b", Auth0: Auth0{ClientSecret: "tenant-secret"}, WriteKey: "tenant-write-key"}}
	require.ElementsMatch(t, []string{
		"client-secret-value", "write-key-value", "tenant-secret", "tenant-write-key",
		"redis://:redis-pass-value@redis:6379/0", "redis-pass-value", "static-token-value-0123456789abcdef",
	}, Reveal(c.Secrets()...))
}

// TestSecretsStreamTokens: the Log Stream tokens, the single tenant's and
// each listed tenant's, are masked whole and by their credential alone.
func TestSecretsStreamTokens(t *testing.T) {
	c := Default()
	c.Auth0.StreamToken = "Bearer stream-token-value-0123456789abcdef"
	c.Tenants = []Tenant{
		{Name: "a", Auth0: Auth0{StreamToken: "tenant-a-stream-token-0123456789abcdef"}},
		{Name: "b", Auth0: Auth0{StreamToken: "Bearer tenant-b-stream-token-0123456789"}},
	}
	require.ElementsMatch(t, []string{
		"Bearer stream-token-value-0123456789abcdef", "stream-token-value-0123456789abcdef",
		"tenant-a-stream-token-0123456789abcdef",
		"Bearer tenant-b-stream-token-0123456789", "tenant-b-stream-token-0123456789",
	}, Reveal(c.Secrets()...))
}

// TestSecretsSentinelPassword: the Sentinels' password is masked too.
func TestSecretsSentinelPassword(t *testing.T) {
	c := Default()
	c.Redis.URL = "redis-sentinel://:master-pass@s1:26379?master=m&sentinel_password=sentinel-pass"
	require.ElementsMatch(t, []string{c.Redis.URL.Reveal(), "master-pass", "sentinel-pass"}, Reveal(c.Secrets()...))
}
