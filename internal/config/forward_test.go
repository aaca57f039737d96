package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLoadForwardAndPII covers the forwarding filter and PII settings given
// in the file: type lists as YAML lists or comma-separated values, and the
// errors that name the setting by file:line, key and variable.
func TestLoadForwardAndPII(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // error; "" means it loads
		cfg  func(t *testing.T, c *Config)
	}{
		{
			name: "lists and policies",
			yaml: "forward:\n  include_types: [S, f]\n  exclude_types: fsa\npii:\n  email: drop\n",
			cfg: func(t *testing.T, c *Config) {
				require.Equal(t, Forward{IncludeTypes: []string{"s", "f"}, ExcludeTypes: []string{"fsa"}}, c.Forward)
				require.Equal(t, PII{UserName: "hash", Email: "drop", IP: "hash", UserAgent: "hash"}, c.PII)
			},
		},
		{
			name: "empty list leaves the default",
			yaml: "forward:\n  include_types: []\n",
			cfg:  func(t *testing.T, c *Config) { require.Empty(t, c.Forward.IncludeTypes) },
		},
		{
			name: "unknown code in a list",
			yaml: "forward:\n  include_types: [s, nope]\n",
			want: `config: F:2: forward.include_types (AUTHPIPE_FORWARD_INCLUDE_TYPES): "nope" is not an Auth0 log type code (e.g. s, f, fp, fu, fsa, slo)`,
		},
		{
			name: "a mapping inside the list",
			yaml: "forward:\n  exclude_types: [s, {a: b}]\n",
			want: "config: F:2: forward.exclude_types (AUTHPIPE_FORWARD_EXCLUDE_TYPES): expected a list of single values",
		},
		{
			name: "a list where one policy belongs",
			yaml: "pii:\n  ip: [keep]\n",
			want: "config: F:2: pii.ip (AUTHPIPE_PII_IP): expected a single value, found a list",
		},
		{
			name: "unknown policy",
			yaml: "pii:\n  user_agent: mask\n",
			want: `config: F:2: pii.user_agent (AUTHPIPE_PII_USER_AGENT): "mask" is not one of keep, hash, drop`,
		},
		{
			name: "misspelt key",
			yaml: "pii:\n  username: keep\n",
			want: `config: F:2: field "username" not found in pii (did you mean "user_name"?)`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "authpipe.yml", tc.yaml)
			cfg, err := Load(envFrom(with(validEnv(), EnvConfig, path)))
			if tc.want != "" {
				require.Nil(t, cfg)
				require.EqualError(t, err, strings.ReplaceAll(tc.want, "F:", path+":"))
				return
			}
			require.NoError(t, err)
			tc.cfg(t, cfg)
		})
	}
}

// TestEnvOverridesFilePII: the environment wins over the file, per setting.
func TestEnvOverridesFilePII(t *testing.T) {
	path := writeFile(t, "authpipe.yml", "forward:\n  exclude_types: [fsa]\npii:\n  ip: drop\n  email: keep\n")
	cfg, err := Load(envFrom(with(validEnv(), EnvConfig, path, "AUTHPIPE_PII_IP", "keep", "AUTHPIPE_FORWARD_EXCLUDE_TYPES", "slo")))
	require.NoError(t, err)
	require.Equal(t, PII{UserName: "hash", Email: "keep", IP: "keep", UserAgent: "hash"}, cfg.PII)
	require.Equal(t, []string{"slo"}, cfg.Forward.ExcludeTypes)
}
