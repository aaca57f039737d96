package config

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// envFrom turns a map into a getenv function like os.LookupEnv.
func envFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// validEnv returns the smallest environment that loads.
func validEnv() map[string]string {
	return map[string]string{
		"AUTH0_DOMAIN":        "acme.eu.auth0.com",
		"AUTH0_CLIENT_ID":     "client-id",
		"AUTH0_CLIENT_SECRET": "S3cr3t-client",
		"SEGMENT_WRITE_KEY":   "S3cr3t-write",
	}
}

// with returns a copy of base with kv pairs set.
func with(base map[string]string, kv ...string) map[string]string {
	m := make(map[string]string, len(base)+len(kv)/2)
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// without returns a copy of base without the keys.
func without(base map[string]string, keys ...string) map[string]string {
	m := with(base)
	for _, k := range keys {
		delete(m, k)
	}
	return m
}

// writeFile writes content to a new file in a temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// requireLoadError loads env and requires exactly the error want, which
// must be one line and must not contain any secret marker.
func requireLoadError(t *testing.T, env map[string]string, want string) {
	t.Helper()
	cfg, err := Load(envFrom(env))
	require.Error(t, err)
	require.Nil(t, cfg)
	require.Equal(t, want, err.Error())
	require.NotContains(t, err.Error(), "\n")
	require.NotContains(t, err.Error(), "S3cr3t")
	var cerr *Error
	require.True(t, errors.As(err, &cerr))
	require.NotEmpty(t, cerr.Problems)
}

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(envFrom(validEnv()))
	require.NoError(t, err)

	host, err := os.Hostname()
	require.NoError(t, err)
	want := Config{
		Tenant: "default",
		Auth0: Auth0{
			Domain:         "acme.eu.auth0.com",
			ClientID:       "client-id",
			ClientSecret:   "S3cr3t-client",
			LogRetention:   144 * time.Hour,
			PollInterval:   10 * time.Second,
			RequestTimeout: 30 * time.Second,
			PageSize:       100,
			RateLimitShare: 0.8,
		},
		Stream: Stream{HealthyWindow: 2 * time.Minute, PollInterval: 5 * time.Minute},
		Segment: Segment{
			WriteKey:      "S3cr3t-write",
			Endpoint:      "https://api.segment.io",
			BatchSize:     250,
			FlushInterval: time.Second,
			MaxInFlight:   10000,
		},
		Buffer: Buffer{
			MaxEvents:     2000000,
			MaxDeliveries: 10,
			ReclaimIdle:   60 * time.Second,
			Consumer:      host,
			LeaseTTL:      15 * time.Second,
		},
		PII:    PII{UserName: "hash", Email: "hash", IP: "hash", UserAgent: "hash"},
		Listen: ":9464",
		HTTP: HTTP{
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, MaxBodyBytes: 1 << 20,
		},
		DataDir:         "./data",
		ShutdownTimeout: 8 * time.Second,
		LagAlertRatio:   0.5,
		LogLevel:        "info",
		LogFormat:       "json",
		Admin:           Admin{AuditLog: "stdout", AuditRetention: 720 * time.Hour},
	}
	require.Equal(t, want, *cfg)
	require.Empty(t, cfg.File)
	require.Empty(t, cfg.Redis.URL, "unset REDIS_URL selects the embedded buffer")
	require.NoError(t, cfg.Validate())
}

func TestDefaultIsValidOnceRequiredAreSet(t *testing.T) {
	c := Default()
	require.EqualError(t, c.Validate(), "config: AUTH0_DOMAIN is required; AUTH0_CLIENT_ID is required; AUTH0_CLIENT_SECRET is required; SEGMENT_WRITE_KEY is required")
	c.Auth0.Domain, c.Auth0.ClientID, c.Auth0.ClientSecret, c.Segment.WriteKey = "a.auth0.com", "id", "s", "k"
	require.NoError(t, c.Validate())
}

func TestLoadRequired(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"domain", without(validEnv(), "AUTH0_DOMAIN"), "config: AUTH0_DOMAIN is required"},
		{"client id", without(validEnv(), "AUTH0_CLIENT_ID"), "config: AUTH0_CLIENT_ID is required"},
		{"client secret", without(validEnv(), "AUTH0_CLIENT_SECRET"), "config: AUTH0_CLIENT_SECRET is required"},
		{"write key", without(validEnv(), "SEGMENT_WRITE_KEY"), "config: SEGMENT_WRITE_KEY is required"},
		{"empty counts as unset", with(validEnv(), "AUTH0_DOMAIN", ""), "config: AUTH0_DOMAIN is required"},
		{"blank counts as unset", with(validEnv(), "AUTH0_CLIENT_ID", " \t"), "config: AUTH0_CLIENT_ID is required"},
		{"secret of line breaks counts as unset", with(validEnv(), "SEGMENT_WRITE_KEY", "\r\n"), "config: SEGMENT_WRITE_KEY is required"},
		{"all, in stable order", map[string]string{}, "config: AUTH0_DOMAIN is required; AUTH0_CLIENT_ID is required; AUTH0_CLIENT_SECRET is required; SEGMENT_WRITE_KEY is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireLoadError(t, tt.env, tt.want)
		})
	}
}

func TestLoadMalformed(t *testing.T) {
	const redisHint = " (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)"
	const domainHint = " (e.g. tenant.eu.auth0.com, https://tenant.eu.auth0.com or http://127.0.0.1:8080)"
	tests := []struct {
		name, env, value, want string
	}{
		{"tenant upper case", "AUTHPIPE_TENANT", "Acme", `AUTHPIPE_TENANT: "Acme" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},
		{"tenant leading dash", "AUTHPIPE_TENANT", "-acme", `AUTHPIPE_TENANT: "-acme" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},
		{"tenant too long", "AUTHPIPE_TENANT", strings.Repeat("a", 33), `AUTHPIPE_TENANT: "` + strings.Repeat("a", 33) + `" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},
		{"tenant with colon", "AUTHPIPE_TENANT", "a:b", `AUTHPIPE_TENANT: "a:b" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`},

		{"domain with path", "AUTH0_DOMAIN", "acme.auth0.com/api/v2", "AUTH0_DOMAIN: must not have a path or query: authpipe adds the API path" + domainHint},
		{"domain with query", "AUTH0_DOMAIN", "https://acme.auth0.com?x=1", "AUTH0_DOMAIN: must not have a path or query: authpipe adds the API path" + domainHint},
		{"domain scheme", "AUTH0_DOMAIN", "ftp://acme.auth0.com", "AUTH0_DOMAIN: must be a host name or an http:// or https:// URL" + domainHint},
		{"domain without host", "AUTH0_DOMAIN", "https://", "AUTH0_DOMAIN: missing host" + domainHint},
		{"domain with credentials", "AUTH0_DOMAIN", "https://user:S3cr3t@acme.auth0.com", "AUTH0_DOMAIN: must not contain a user name or password" + domainHint},
		{"domain with space", "AUTH0_DOMAIN", "acme auth0.com", "AUTH0_DOMAIN: not a host name or URL" + domainHint},
		{"domain bad port", "AUTH0_DOMAIN", "http://127.0.0.1:80a", "AUTH0_DOMAIN: not a host name or URL" + domainHint},

		{"client id with space", "AUTH0_CLIENT_ID", "abc def", "AUTH0_CLIENT_ID: must not contain spaces or control characters"},

		{"retention too short", "AUTH0_LOG_RETENTION", "30m", "AUTH0_LOG_RETENTION: 30m must be at least 1h"},
		{"retention in days", "AUTH0_LOG_RETENTION", "6d", `AUTH0_LOG_RETENTION: "6d" is not a duration (e.g. 144h)`},
		{"poll interval", "AUTH0_POLL_INTERVAL", "5x", `AUTH0_POLL_INTERVAL: "5x" is not a duration (e.g. 10s)`},
		{"poll interval bare number", "AUTH0_POLL_INTERVAL", "10", `AUTH0_POLL_INTERVAL: "10" is not a duration (e.g. 10s)`},
		{"poll interval too short", "AUTH0_POLL_INTERVAL", "50ms", "AUTH0_POLL_INTERVAL: 50ms must be between 100ms and 1h"},
		{"poll interval too long", "AUTH0_POLL_INTERVAL", "90m", "AUTH0_POLL_INTERVAL: 1h30m must be between 100ms and 1h"},
		{"request timeout negative", "AUTH0_REQUEST_TIMEOUT", "-1s", "AUTH0_REQUEST_TIMEOUT: -1s must be between 100ms and 5m"},
		{"page size zero", "AUTH0_PAGE_SIZE", "0", "AUTH0_PAGE_SIZE: 0 must be between 1 and 100"},
		{"page size above take limit", "AUTH0_PAGE_SIZE", "101", "AUTH0_PAGE_SIZE: 101 must be between 1 and 100"},
		{"page size not a number", "AUTH0_PAGE_SIZE", "ten", `AUTH0_PAGE_SIZE: "ten" is not an integer (e.g. 100)`},
		{"page size overflow", "AUTH0_PAGE_SIZE", "99999999999999999999", `AUTH0_PAGE_SIZE: "99999999999999999999" is not an integer (e.g. 100)`},

		{"segment endpoint without scheme", "SEGMENT_ENDPOINT", "api.segment.io", "SEGMENT_ENDPOINT: must be an http:// or https:// URL (e.g. https://events.eu1.segmentapis.com)"},
		{"segment endpoint without host", "SEGMENT_ENDPOINT", "https:///v1", "SEGMENT_ENDPOINT: missing host (e.g. https://events.eu1.segmentapis.com)"},
		{"batch size", "SEGMENT_BATCH_SIZE", "2501", "SEGMENT_BATCH_SIZE: 2501 must be between 1 and 2500"},
		{"flush interval zero", "SEGMENT_FLUSH_INTERVAL", "0s", "SEGMENT_FLUSH_INTERVAL: 0s must be between 10ms and 5m"},
		{"max in flight", "SEGMENT_MAX_IN_FLIGHT", "100001", "SEGMENT_MAX_IN_FLIGHT: 100001 must be between 1 and 100000"},

		{"redis scheme", "REDIS_URL", "http://:S3cr3t@redis:6379", "REDIS_URL: must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)" + redisHint},
		{"redis host:port only", "REDIS_URL", "redis:6379", "REDIS_URL: must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)" + redisHint},
		{"redis unencoded # in password", "REDIS_URL", "redis://:S3cr3t#pw@redis:6379/0", "REDIS_URL: not a valid URL; percent-encode special characters in the password" + redisHint},
		{"redis unencoded / in password", "REDIS_URL", "redis://default:123/S3cr3t@redis:6379", "REDIS_URL: contains an @ after the host; percent-encode special characters in the password" + redisHint},
		{"redis unencoded ? in password", "REDIS_URL", "redis://u:12?S3cr3t=x@redis", "REDIS_URL: contains an @ after the host; percent-encode special characters in the password" + redisHint},
		{"redis bad userinfo", "REDIS_URL", "redis://:S3cr3t pw@redis:6379", "REDIS_URL: not a valid URL; percent-encode special characters in the password" + redisHint},
		{"redis no host", "REDIS_URL", "redis://:S3cr3t@", "REDIS_URL: missing host; percent-encode special characters in the password" + redisHint},
		{"redis no host, no password", "REDIS_URL", "redis:///0", "REDIS_URL: missing host" + redisHint},
		{"redis database not a number", "REDIS_URL", "redis://:S3cr3t@redis:6379/S3cr3t", "REDIS_URL: path must be empty or a database number like /0" + redisHint},
		{"redis unknown option", "REDIS_URL", "redis://:S3cr3t@redis:6379/0?S3cr3t=1", "REDIS_URL: has a query option go-redis does not accept" + redisHint},
		{"redis bad option value", "REDIS_URL", "redis://:S3cr3t@redis:6379/0?dial_timeout=S3cr3t", "REDIS_URL: has a query option go-redis does not accept" + redisHint},

		{"max events zero", "AUTHPIPE_BUFFER_MAX_EVENTS", "0", "AUTHPIPE_BUFFER_MAX_EVENTS: 0 must be at least 1"},
		{"max events float", "AUTHPIPE_BUFFER_MAX_EVENTS", "2e6", `AUTHPIPE_BUFFER_MAX_EVENTS: "2e6" is not an integer (e.g. 2000000)`},
		{"max deliveries", "AUTHPIPE_MAX_DELIVERIES", "0", "AUTHPIPE_MAX_DELIVERIES: 0 must be between 1 and 1000"},
		{"reclaim idle", "AUTHPIPE_RECLAIM_IDLE", "1ms", "AUTHPIPE_RECLAIM_IDLE: 1ms must be between 100ms and 24h"},
		{"reclaim idle example", "AUTHPIPE_RECLAIM_IDLE", "1 minute", `AUTHPIPE_RECLAIM_IDLE: "1 minute" is not a duration (e.g. 1m)`},
		{"consumer with space", "AUTHPIPE_CONSUMER", "worker 1", "AUTHPIPE_CONSUMER: must not contain spaces or control characters"},
		{"consumer too long", "AUTHPIPE_CONSUMER", strings.Repeat("c", 129), "AUTHPIPE_CONSUMER: must be at most 128 characters"},
		{"lease ttl too short", "AUTHPIPE_LEASE_TTL", "500ms", "AUTHPIPE_LEASE_TTL: 500ms must be between 1s and 10m"},
		{"rate limit share above 1", "AUTH0_RATE_LIMIT_SHARE", "1.5", "AUTH0_RATE_LIMIT_SHARE: 1.5 must be more than 0 and at most 1"},
		{"rate limit share zero", "AUTH0_RATE_LIMIT_SHARE", "0", "AUTH0_RATE_LIMIT_SHARE: 0 must be more than 0 and at most 1"},
		{"rate limit share percent", "AUTH0_RATE_LIMIT_SHARE", "80%", `AUTH0_RATE_LIMIT_SHARE: "80%" is not a decimal number (e.g. 0.8)`},
		{"rate limit share NaN", "AUTH0_RATE_LIMIT_SHARE", "NaN", `AUTH0_RATE_LIMIT_SHARE: "NaN" is not a decimal number (e.g. 0.8)`},
		{"lag alert ratio 1", "AUTHPIPE_LAG_ALERT_RATIO", "1", "AUTHPIPE_LAG_ALERT_RATIO: 1 must be more than 0 and less than 1"},
		{"lag alert ratio negative", "AUTHPIPE_LAG_ALERT_RATIO", "-0.5", "AUTHPIPE_LAG_ALERT_RATIO: -0.5 must be more than 0 and less than 1"},

		{"listen without port", "AUTHPIPE_LISTEN", "9464", `AUTHPIPE_LISTEN: "9464" is not host:port with a numeric port (e.g. :9464 or 127.0.0.1:9464)`},
		{"listen port too big", "AUTHPIPE_LISTEN", ":99999", `AUTHPIPE_LISTEN: ":99999" is not host:port with a numeric port (e.g. :9464 or 127.0.0.1:9464)`},
		{"listen named port", "AUTHPIPE_LISTEN", ":http", `AUTHPIPE_LISTEN: ":http" is not host:port with a numeric port (e.g. :9464 or 127.0.0.1:9464)`},
		{"alertmanager without scheme", "ALERTMANAGER_URL", "alertmanager:9093", "ALERTMANAGER_URL: must be an http:// or https:// URL (e.g. http://alertmanager:9093)"},
		{"alertmanager credentials not echoed", "ALERTMANAGER_URL", "ftp://am:S3cr3t@alertmanager:9093", "ALERTMANAGER_URL: must be an http:// or https:// URL (e.g. http://alertmanager:9093)"},
		{"webhook token not echoed", "AUTHPIPE_ALERT_WEBHOOK_URL", "hooks.example.com/S3cr3t", "AUTHPIPE_ALERT_WEBHOOK_URL: must be an http:// or https:// URL (e.g. https://hooks.example.com/authpipe)"},
		{"webhook unparsable", "AUTHPIPE_ALERT_WEBHOOK_URL", "https://hooks example.com/S3cr3t", "AUTHPIPE_ALERT_WEBHOOK_URL: not a valid URL (e.g. https://hooks.example.com/authpipe)"},
		{"hash key too short", "AUTHPIPE_HASH_KEY", "S3cr3t", "AUTHPIPE_HASH_KEY: must be at least 16 characters (e.g. the output of: openssl rand -hex 32)"},
		{"shutdown zero", "AUTHPIPE_SHUTDOWN_TIMEOUT", "0s", "AUTHPIPE_SHUTDOWN_TIMEOUT: 0s must be more than 0 and at most 1m"},
		{"shutdown too long", "AUTHPIPE_SHUTDOWN_TIMEOUT", "61s", "AUTHPIPE_SHUTDOWN_TIMEOUT: 1m1s must be more than 0 and at most 1m"},
		{"shutdown not a duration", "AUTHPIPE_SHUTDOWN_TIMEOUT", "eight", `AUTHPIPE_SHUTDOWN_TIMEOUT: "eight" is not a duration (e.g. 8s)`},
		{"log level", "AUTHPIPE_LOG_LEVEL", "verbose", `AUTHPIPE_LOG_LEVEL: "verbose" is not one of debug, info, warn, error`},
		{"log format", "AUTHPIPE_LOG_FORMAT", "XML", `AUTHPIPE_LOG_FORMAT: "xml" is not one of json, text`},

		{"include unknown type", "AUTHPIPE_FORWARD_INCLUDE_TYPES", "s,login", `AUTHPIPE_FORWARD_INCLUDE_TYPES: "login" is not an Auth0 log type code (e.g. s, f, fp, fu, fsa, slo)`},
		{"exclude unknown types", "AUTHPIPE_FORWARD_EXCLUDE_TYPES", "zz, fsa ,yy", `AUTHPIPE_FORWARD_EXCLUDE_TYPES: "zz", "yy" are not Auth0 log type codes (e.g. s, f, fp, fu, fsa, slo)`},
		{"exclude empty item", "AUTHPIPE_FORWARD_EXCLUDE_TYPES", "fsa,,slo", `AUTHPIPE_FORWARD_EXCLUDE_TYPES: "fsa,,slo" has an empty item: list log type codes separated by commas (e.g. fsa,slo)`},
		{"pii user name", "AUTHPIPE_PII_USER_NAME", "mask", `AUTHPIPE_PII_USER_NAME: "mask" is not one of keep, hash, drop`},
		{"pii email", "AUTHPIPE_PII_EMAIL", "hashed", `AUTHPIPE_PII_EMAIL: "hashed" is not one of keep, hash, drop`},
		{"pii ip", "AUTHPIPE_PII_IP", "anonymize", `AUTHPIPE_PII_IP: "anonymize" is not one of keep, hash, drop`},
		{"pii user agent", "AUTHPIPE_PII_USER_AGENT", "no", `AUTHPIPE_PII_USER_AGENT: "no" is not one of keep, hash, drop`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireLoadError(t, with(validEnv(), tt.env, tt.value), "config: "+tt.want)
		})
	}
}

func TestLoadSeveralProblemsInOneLine(t *testing.T) {
	env := with(without(validEnv(), "SEGMENT_WRITE_KEY"),
		"AUTH0_PAGE_SIZE", "0",
		"AUTHPIPE_LOG_LEVEL", "loud",
		"AUTH0_POLL_INTERVAL", "5x",
		"AUTHPIPE_TENANT", "Acme",
	)
	want := `config: AUTHPIPE_TENANT: "Acme" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit; ` +
		`AUTH0_POLL_INTERVAL: "5x" is not a duration (e.g. 10s); ` +
		`AUTH0_PAGE_SIZE: 0 must be between 1 and 100; ` +
		`SEGMENT_WRITE_KEY is required; ` +
		`AUTHPIPE_LOG_LEVEL: "loud" is not one of debug, info, warn, error`
	for range 3 { // the order never depends on map iteration
		requireLoadError(t, env, want)
	}
}

func TestLoadAcceptedValues(t *testing.T) {
	tests := []struct {
		name, env, value string
		check            func(t *testing.T, c *Config)
	}{
		{"bare host", "AUTH0_DOMAIN", "acme.eu.auth0.com", func(t *testing.T, c *Config) {
			require.Equal(t, "acme.eu.auth0.com", c.Auth0.Host())
			require.False(t, c.Auth0.Insecure())
		}},
		{"bare host with port", "AUTH0_DOMAIN", "localhost:8443", func(t *testing.T, c *Config) {
			require.Equal(t, "localhost:8443", c.Auth0.Host())
			require.False(t, c.Auth0.Insecure())
		}},
		{"https URL with slash", "AUTH0_DOMAIN", "https://acme.auth0.com/", func(t *testing.T, c *Config) {
			require.Equal(t, "acme.auth0.com", c.Auth0.Host())
			require.False(t, c.Auth0.Insecure())
		}},
		{"simulator over plain HTTP", "AUTH0_DOMAIN", "http://127.0.0.1:8080", func(t *testing.T, c *Config) {
			require.Equal(t, "127.0.0.1:8080", c.Auth0.Host())
			require.True(t, c.Auth0.Insecure())
		}},
		{"upper-case scheme", "AUTH0_DOMAIN", "HTTP://sim:8080", func(t *testing.T, c *Config) {
			require.Equal(t, "sim:8080", c.Auth0.Host())
			require.True(t, c.Auth0.Insecure())
		}},
		{"IPv6 simulator", "AUTH0_DOMAIN", "http://[::1]:8080", func(t *testing.T, c *Config) {
			require.Equal(t, "[::1]:8080", c.Auth0.Host())
		}},
		{"white space trimmed", "AUTH0_DOMAIN", "  acme.auth0.com\n", func(t *testing.T, c *Config) {
			require.Equal(t, "acme.auth0.com", c.Auth0.Domain)
		}},
		{"redis", "REDIS_URL", "redis://redis:6379/0", func(t *testing.T, c *Config) {
			require.Equal(t, Secret("redis://redis:6379/0"), c.Redis.URL)
		}},
		{"rediss with encoded password and options", "REDIS_URL", "rediss://user:p%2Fw%23d@redis.example.com:6380/2?dial_timeout=3s", func(t *testing.T, c *Config) {
			require.Equal(t, "rediss://user:p%2Fw%23d@redis.example.com:6380/2?dial_timeout=3s", c.Redis.URL.Reveal())
		}},
		{"secret keeps spaces, loses trailing line break", "AUTH0_CLIENT_SECRET", " a b \r\n", func(t *testing.T, c *Config) {
			require.Equal(t, " a b ", c.Auth0.ClientSecret.Reveal())
		}},
		{"log level case-insensitive", "AUTHPIPE_LOG_LEVEL", "WARN", func(t *testing.T, c *Config) {
			require.Equal(t, "warn", c.LogLevel)
		}},
		{"shutdown at the maximum", "AUTHPIPE_SHUTDOWN_TIMEOUT", "60s", func(t *testing.T, c *Config) {
			require.Equal(t, time.Minute, c.ShutdownTimeout)
		}},
		{"listen on an ephemeral port", "AUTHPIPE_LISTEN", "127.0.0.1:0", func(t *testing.T, c *Config) {
			require.Equal(t, "127.0.0.1:0", c.Listen)
		}},
		{"tenant of 32", "AUTHPIPE_TENANT", "a" + strings.Repeat("_", 30) + "9", func(t *testing.T, c *Config) {
			require.Len(t, c.Tenant, 32)
		}},
		{"alertmanager with path prefix", "ALERTMANAGER_URL", "https://am.example.com/alertmanager", func(t *testing.T, c *Config) {
			require.Equal(t, "https://am.example.com/alertmanager", c.AlertmanagerURL)
		}},
		{"include types trimmed, lower-cased, deduplicated", "AUTHPIPE_FORWARD_INCLUDE_TYPES", " s, FP ,fu,s ", func(t *testing.T, c *Config) {
			require.Equal(t, []string{"s", "fp", "fu"}, c.Forward.IncludeTypes)
			require.Empty(t, c.Forward.ExcludeTypes)
		}},
		{"exclude one type", "AUTHPIPE_FORWARD_EXCLUDE_TYPES", "fsa", func(t *testing.T, c *Config) {
			require.Equal(t, []string{"fsa"}, c.Forward.ExcludeTypes)
		}},
		{"whole rate limit", "AUTH0_RATE_LIMIT_SHARE", "1", func(t *testing.T, c *Config) {
			require.Equal(t, 1.0, c.Auth0.RateLimitShare)
		}},
		{"lag alert ratio", "AUTHPIPE_LAG_ALERT_RATIO", "0.25", func(t *testing.T, c *Config) {
			require.Equal(t, 0.25, c.LagAlertRatio)
		}},
		{"pii case-insensitive", "AUTHPIPE_PII_IP", "Keep", func(t *testing.T, c *Config) {
			require.Equal(t, PII{UserName: "hash", Email: "hash", IP: "keep", UserAgent: "hash"}, c.PII)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(envFrom(with(validEnv(), tt.env, tt.value)))
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

// fullYAML sets every setting to a value that differs from its default.
const fullYAML = `# every setting
tenant: from-file
auth0:
  domain: file.auth0.com
  client_id: file-client
  client_secret: S3cr3t-file-client
  log_retention: 240h
  poll_interval: 20s
  request_timeout: 15s
  page_size: 50
  rate_limit_share: 0.6
  stream_token: Bearer S3cr3t-file-stream-token-0123456789
stream:
  listen: 127.0.0.1:9465
  healthy_window: 3m
  poll_interval: 10m
segment:
  write_key: S3cr3t-file-write
  endpoint: https://events.eu1.segmentapis.com
  batch_size: 100
  flush_interval: 2s
  max_in_flight: 500
redis:
  url: redis://file-redis:6379/1
buffer:
  max_events: 1000
  max_deliveries: 5
  reclaim_idle: 2m
  consumer: file-consumer
  lease_ttl: 30s
listen: 127.0.0.1:9000
data_dir: /var/lib/authpipe
rules: /etc/authpipe/rules.yml
alertmanager_url: http://am:9093
alert_webhook_url: https://hooks.example.com/x
hash_key: S3cr3t-file-hash-key-0123456789
shutdown_timeout: 20s
http:
  read_header_timeout: 5s
  read_timeout: 20s
  write_timeout: 40s
  idle_timeout: 90s
  max_header_bytes: 32768
  max_body_bytes: 65536
lag_alert_ratio: 0.4
log:
  level: debug
  format: text
forward:
  include_types: [s, f, FP, s]
  exclude_types: fsa, slo
pii:
  user_name: keep
  email: DROP
  ip: keep
  user_agent: drop
admin:
  audience: https://authpipe.example.com/admin
  issuer: https://login.example.com/
  jwks_url: https://login.example.com/keys.json
  static_token: S3cr3t-file-static-token-0123456789abcdef
  audit_log: /var/log/authpipe/audit.jsonl
  audit_retention: 2160h
`

func TestLoadFile(t *testing.T) {
	path := writeFile(t, "authpipe.yml", fullYAML)
	cfg, err := Load(envFrom(map[string]string{"AUTHPIPE_CONFIG": path}))
	require.NoError(t, err)
	require.Equal(t, Config{
		File:   path,
		Tenant: "from-file",
		Auth0: Auth0{
			Domain: "file.auth0.com", ClientID: "file-client", ClientSecret: "S3cr3t-file-client",
			LogRetention: 240 * time.Hour, PollInterval: 20 * time.Second, RequestTimeout: 15 * time.Second, PageSize: 50,
			RateLimitShare: 0.6, StreamToken: "Bearer S3cr3t-file-stream-token-0123456789",
		},
		Stream: Stream{Listen: "127.0.0.1:9465", HealthyWindow: 3 * time.Minute, PollInterval: 10 * time.Minute},
		Segment: Segment{
			WriteKey: "S3cr3t-file-write", Endpoint: "https://events.eu1.segmentapis.com",
			BatchSize: 100, FlushInterval: 2 * time.Second, MaxInFlight: 500,
		},
		Forward: Forward{IncludeTypes: []string{"s", "f", "fp"}, ExcludeTypes: []string{"fsa", "slo"}},
		PII:     PII{UserName: "keep", Email: "drop", IP: "keep", UserAgent: "drop"},
		Redis:   Redis{URL: "redis://file-redis:6379/1"},
		Buffer:  Buffer{MaxEvents: 1000, MaxDeliveries: 5, ReclaimIdle: 2 * time.Minute, Consumer: "file-consumer", LeaseTTL: 30 * time.Second},
		Listen:  "127.0.0.1:9000",
		HTTP: HTTP{
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 20 * time.Second, WriteTimeout: 40 * time.Second,
			IdleTimeout: 90 * time.Second, MaxHeaderBytes: 32 << 10, MaxBodyBytes: 64 << 10,
		},
		DataDir:         "/var/lib/authpipe",
		RulesPath:       "/etc/authpipe/rules.yml",
		AlertmanagerURL: "http://am:9093",
		AlertWebhookURL: "https://hooks.example.com/x",
		HashKey:         "S3cr3t-file-hash-key-0123456789",
		ShutdownTimeout: 20 * time.Second,
		LagAlertRatio:   0.4,
		LogLevel:        "debug",
		LogFormat:       "text",
		Admin: Admin{
			Audience: "https://authpipe.example.com/admin", Issuer: "https://login.example.com/",
			JWKSURL: "https://login.example.com/keys.json", StaticToken: "S3cr3t-file-static-token-0123456789abcdef",
			AuditLog: "/var/log/authpipe/audit.jsonl", AuditRetention: 2160 * time.Hour,
		},
	}, *cfg)
}

func TestLoadEnvOverridesFile(t *testing.T) {
	path := writeFile(t, "authpipe.yml", fullYAML)
	env := map[string]string{
		"AUTHPIPE_CONFIG":            path,
		"AUTHPIPE_TENANT":            "from-env",
		"AUTH0_DOMAIN":               "http://127.0.0.1:8080",
		"AUTH0_CLIENT_SECRET":        "S3cr3t-env-client",
		"AUTH0_POLL_INTERVAL":        "1s",
		"AUTH0_PAGE_SIZE":            "10",
		"SEGMENT_WRITE_KEY":          "S3cr3t-env-write",
		"SEGMENT_BATCH_SIZE":         "7",
		"REDIS_URL":                  "redis://env-redis:6379/0",
		"AUTHPIPE_BUFFER_MAX_EVENTS": "99",
		"AUTHPIPE_RECLAIM_IDLE":      "5s",
		"AUTHPIPE_LISTEN":            ":9999",
		"AUTHPIPE_SHUTDOWN_TIMEOUT":  "3s",
		"AUTHPIPE_LOG_FORMAT":        "json",
		"AUTHPIPE_RULES":             "", // empty: the file's value stays
	}
	cfg, err := Load(envFrom(env))
	require.NoError(t, err)

	// from the environment
	require.Equal(t, "from-env", cfg.Tenant)
	require.Equal(t, "http://127.0.0.1:8080", cfg.Auth0.Domain)
	require.Equal(t, Secret("S3cr3t-env-client"), cfg.Auth0.ClientSecret)
	require.Equal(t, time.Second, cfg.Auth0.PollInterval)
	require.Equal(t, 10, cfg.Auth0.PageSize)
	require.Equal(t, Secret("S3cr3t-env-write"), cfg.Segment.WriteKey)
	require.Equal(t, 7, cfg.Segment.BatchSize)
	require.Equal(t, Secret("redis://env-redis:6379/0"), cfg.Redis.URL)
	require.Equal(t, int64(99), cfg.Buffer.MaxEvents)
	require.Equal(t, 5*time.Second, cfg.Buffer.ReclaimIdle)
	require.Equal(t, ":9999", cfg.Listen)
	require.Equal(t, 3*time.Second, cfg.ShutdownTimeout)
	require.Equal(t, "json", cfg.LogFormat)
	// from the file
	require.Equal(t, "file-client", cfg.Auth0.ClientID)
	require.Equal(t, 240*time.Hour, cfg.Auth0.LogRetention)
	require.Equal(t, "/etc/authpipe/rules.yml", cfg.RulesPath)
	require.Equal(t, "debug", cfg.LogLevel)
	require.Equal(t, "file-consumer", cfg.Buffer.Consumer)
	require.Equal(t, path, cfg.File)
}

func TestLoadEnvFixesNothingInABadFile(t *testing.T) {
	// A bad value in the file stays an error even when the environment
	// overrides it: the file is wrong and will bite the next reader.
	path := writeFile(t, "cfg.yml", "auth0:\n  poll_interval: 5x\n")
	env := with(validEnv(), "AUTHPIPE_CONFIG", path, "AUTH0_POLL_INTERVAL", "10s")
	requireLoadError(t, env, "config: "+path+`:2: auth0.poll_interval (AUTH0_POLL_INTERVAL): "5x" is not a duration (e.g. 10s)`)
}

func TestLoadConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yml")
	require.NoError(t, os.WriteFile(big, []byte("# "+strings.Repeat("x", maxFileSize)+"\n"), 0o600))
	tests := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.yml"), "config: AUTHPIPE_CONFIG: open " + filepath.Join(dir, "nope.yml") + ": no such file or directory"},
		{"directory", dir, "config: AUTHPIPE_CONFIG: read " + dir + ": is a directory"},
		{"too big", big, "config: AUTHPIPE_CONFIG: " + big + " is larger than 1 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireLoadError(t, with(validEnv(), "AUTHPIPE_CONFIG", tt.path), tt.want)
		})
	}
}

func TestLoadEmptyFile(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "comments": "# nothing\n", "null": "~\n", "empty mapping": "{}\n", "trailing separator": "tenant: x\n---\n"} {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, "cfg.yml", content)
			cfg, err := Load(envFrom(with(validEnv(), "AUTHPIPE_CONFIG", path)))
			require.NoError(t, err)
			require.Equal(t, path, cfg.File)
		})
	}
}

func TestLoadSecretFiles(t *testing.T) {
	secrets := []struct {
		env   string
		value string
		get   func(*Config) Secret
	}{
		{"AUTH0_CLIENT_SECRET", "S3cr3t-client-file", func(c *Config) Secret { return c.Auth0.ClientSecret }},
		{"SEGMENT_WRITE_KEY", "S3cr3t-write-file", func(c *Config) Secret { return c.Segment.WriteKey }},
		{"REDIS_URL", "redis://:S3cr3t@redis:6379/0", func(c *Config) Secret { return c.Redis.URL }},
		{"AUTHPIPE_HASH_KEY", "S3cr3t-hash-key-0123456789", func(c *Config) Secret { return c.HashKey }},
	}
	for _, s := range secrets {
		t.Run(s.env, func(t *testing.T) {
			for _, ending := range []string{"", "\n", "\r\n", "\n\n"} {
				path := writeFile(t, "secret", s.value+ending)
				cfg, err := Load(envFrom(with(without(validEnv(), s.env), s.env+"_FILE", path)))
				require.NoError(t, err, "ending %q", ending)
				require.Equal(t, s.value, s.get(cfg).Reveal(), "ending %q", ending)
			}
		})
	}

	t.Run("file wins over YAML", func(t *testing.T) {
		cfgPath := writeFile(t, "cfg.yml", "segment:\n  write_key: S3cr3t-yaml\n")
		keyPath := writeFile(t, "key", "S3cr3t-file\n")
		cfg, err := Load(envFrom(with(without(validEnv(), "SEGMENT_WRITE_KEY"), "AUTHPIPE_CONFIG", cfgPath, "SEGMENT_WRITE_KEY_FILE", keyPath)))
		require.NoError(t, err)
		require.Equal(t, "S3cr3t-file", cfg.Segment.WriteKey.Reveal())
	})

	t.Run("validated like the variable", func(t *testing.T) {
		path := writeFile(t, "redis", "http://:S3cr3t@redis:6379\n")
		requireLoadError(t, with(validEnv(), "REDIS_URL_FILE", path),
			"config: REDIS_URL (read from REDIS_URL_FILE): must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster) (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)")
	})

	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	set := writeFile(t, "set", "S3cr3t-x")
	errorCases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"both set", with(validEnv(), "AUTH0_CLIENT_SECRET_FILE", set),
			"config: AUTH0_CLIENT_SECRET and AUTH0_CLIENT_SECRET_FILE are both set; set only one"},
		{"missing file", with(without(validEnv(), "SEGMENT_WRITE_KEY"), "SEGMENT_WRITE_KEY_FILE", filepath.Join(dir, "nope")),
			"config: SEGMENT_WRITE_KEY_FILE: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"empty file", with(without(validEnv(), "SEGMENT_WRITE_KEY"), "SEGMENT_WRITE_KEY_FILE", empty),
			"config: SEGMENT_WRITE_KEY_FILE: " + empty + " is empty"},
		{"two problems, table order", with(validEnv(), "AUTHPIPE_HASH_KEY_FILE", filepath.Join(dir, "nope"), "AUTH0_CLIENT_SECRET_FILE", set),
			"config: AUTH0_CLIENT_SECRET and AUTH0_CLIENT_SECRET_FILE are both set; set only one; AUTHPIPE_HASH_KEY_FILE: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
	}
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			requireLoadError(t, tt.env, tt.want)
		})
	}
}

func TestLoadNeverEchoesSecrets(t *testing.T) {
	// Every secret-bearing setting, malformed, from env, _FILE and YAML.
	const pw = "S3cr3t-Pa55"
	bad := map[string]string{
		"REDIS_URL":         "redis://default:12/" + pw + "@redis:6379",
		"AUTHPIPE_HASH_KEY": "S3cr3t",
	}
	for env, value := range bad {
		t.Run(env+" from env", func(t *testing.T) {
			_, err := Load(envFrom(with(validEnv(), env, value)))
			require.Error(t, err)
			require.NotContains(t, err.Error(), "S3cr3t")
		})
		t.Run(env+" from file", func(t *testing.T) {
			path := writeFile(t, "s", value+"\n")
			_, err := Load(envFrom(with(validEnv(), env+"_FILE", path)))
			require.Error(t, err)
			require.NotContains(t, err.Error(), "S3cr3t")
		})
	}
	t.Run("yaml", func(t *testing.T) {
		path := writeFile(t, "cfg.yml", "redis:\n  url: \"redis://:"+pw+"#x@redis:6379\"\nhash_key: [\""+pw+"\"]\nauth0:\n  client_secret: {x: "+pw+"}\n")
		_, err := Load(envFrom(with(validEnv(), "AUTHPIPE_CONFIG", path)))
		require.Error(t, err)
		require.NotContains(t, err.Error(), "S3cr3t")
		require.Equal(t, "config: "+path+":3: hash_key (AUTHPIPE_HASH_KEY): expected a single value, found a list; "+
			path+":5: auth0.client_secret (AUTH0_CLIENT_SECRET): expected a single value, found a mapping; "+
			path+":2: redis.url (REDIS_URL): not a valid URL; percent-encode special characters in the password (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)",
			err.Error())
	})
}

func TestAnonymousIDKey(t *testing.T) {
	c := Default()
	c.Segment.WriteKey = "write-key"
	mac := hmac.New(sha256.New, []byte("write-key"))
	mac.Write([]byte("authpipe anonymousId key v1"))
	derived := mac.Sum(nil)
	key := func() []byte { return []byte(c.AnonymousIDKey().Reveal()) }
	require.Equal(t, derived, key())
	require.NotEqual(t, []byte("write-key"), key(), "the write key itself is never the hash key")

	c.Segment.WriteKey = "rotated"
	require.NotEqual(t, derived, key(), "derived key follows the write key")

	c.HashKey = "explicit-hash-key-0123"
	require.Equal(t, []byte("explicit-hash-key-0123"), key())
	c.Segment.WriteKey = "rotated-again"
	require.Equal(t, []byte("explicit-hash-key-0123"), key(), "explicit key survives rotation")
}

func TestValidateHandBuilt(t *testing.T) {
	c := Default()
	c.Auth0.Domain, c.Auth0.ClientID, c.Auth0.ClientSecret, c.Segment.WriteKey = "a.auth0.com", "id", "s", "k"
	c.Listen = ""
	c.Auth0.PageSize = 0
	c.ShutdownTimeout = 0
	c.Redis.URL = "redis://:S3cr3t@/0"
	require.EqualError(t, c.Validate(), "config: AUTHPIPE_LISTEN is required; AUTHPIPE_SHUTDOWN_TIMEOUT: 0s must be more than 0 and at most 1m; "+
		"AUTH0_PAGE_SIZE: 0 must be between 1 and 100; "+
		"REDIS_URL: missing host; percent-encode special characters in the password (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)")
}

func TestExampleFileLoads(t *testing.T) {
	path := filepath.Join("..", "..", "examples", "authpipe.yml")
	cfg, err := Load(envFrom(map[string]string{
		"AUTHPIPE_CONFIG":     path,
		"AUTH0_CLIENT_SECRET": "S3cr3t-client",
		"SEGMENT_WRITE_KEY":   "S3cr3t-write",
	}))
	require.NoError(t, err)
	require.Equal(t, "your-tenant.eu.auth0.com", cfg.Auth0.Domain)
	require.Equal(t, Secret("redis://redis:6379/0"), cfg.Redis.URL)

	// The example shows the defaults: apart from what it must set, loading
	// it changes nothing.
	want := Default()
	want.File = path
	want.Auth0.Domain, want.Auth0.ClientID = cfg.Auth0.Domain, cfg.Auth0.ClientID
	want.Auth0.ClientSecret, want.Segment.WriteKey = "S3cr3t-client", "S3cr3t-write"
	want.Redis.URL = cfg.Redis.URL
	require.Equal(t, want, *cfg)

	// It names every key, set or commented out.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, s := range settings() {
		leaf := s.key[strings.LastIndex(s.key, ".")+1:]
		require.Regexp(t, `(?m)^\s*#?\s*`+leaf+`:`, string(data), "examples/authpipe.yml lacks %s", s.key)
	}
}

func TestErrorIsOneLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a\nb.yml")
	require.NoError(t, os.WriteFile(path, []byte("tenantt: x\n"), 0o600))
	_, err := Load(envFrom(with(validEnv(), "AUTHPIPE_CONFIG", path)))
	require.EqualError(t, err, `config: `+dir+`/a\nb.yml:1: field "tenantt" not found at the top level (did you mean "tenant"?)`)
}
