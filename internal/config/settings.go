package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0log"
)

// msgRequired is the problem of a required setting left empty; it renders
// as "NAME is required".
const msgRequired = "is required"

// setting is one configuration value: its names, how a string becomes the
// value, and how the value is checked. The table in settings() drives the
// environment, the YAML file and Validate, so the three cannot drift apart.
type setting struct {
	env      string // environment variable; names the setting in errors
	key      string // YAML key path, e.g. "auth0.poll_interval"
	secret   bool   // a Secret: never echoed in errors, also read from <env>_FILE
	required bool   // empty is an error
	list     bool   // comma-separated; the file may also give a YAML list of single values

	// set stores a (trimmed, non-empty) string value and returns a problem
	// ("" when it parsed). A problem never quotes a secret.
	set func(c *Config, v string) string
	// empty reports whether the setting is unset in c.
	empty func(c *Config) bool
	// check returns a problem with a set value, or "".
	check func(c *Config) string
}

// validate returns the setting's problem in c, or "".
func (s setting) validate(c *Config) string {
	if s.empty(c) {
		if s.required {
			return msgRequired
		}
		return ""
	}
	return s.check(c)
}

// describe renders a problem of s found at where (the env name, or a file
// location naming the YAML key and env name).
func (s setting) describe(msg, where string) string {
	if msg == msgRequired {
		return where + " " + msg
	}
	return where + ": " + msg
}

// settings lists every setting in the order of CONFIGURATION.md's tables;
// errors follow it.
func settings() []setting {
	return []setting{
		// General
		text("AUTHPIPE_TENANT", "tenant", func(c *Config) *string { return &c.Tenant }, checkTenant),
		text("AUTHPIPE_LISTEN", "listen", func(c *Config) *string { return &c.Listen }, checkListen),
		text("AUTHPIPE_DATA_DIR", "data_dir", func(c *Config) *string { return &c.DataDir }, nil),
		optional(text("AUTHPIPE_RULES", "rules", func(c *Config) *string { return &c.RulesPath }, nil)),
		duration("AUTHPIPE_SHUTDOWN_TIMEOUT", "shutdown_timeout", func(c *Config) *time.Duration { return &c.ShutdownTimeout }, time.Nanosecond, time.Minute),

		// HTTP server (AUTHPIPE_LISTEN)
		duration("AUTHPIPE_HTTP_READ_HEADER_TIMEOUT", "http.read_header_timeout", func(c *Config) *time.Duration { return &c.HTTP.ReadHeaderTimeout }, 100*time.Millisecond, 5*time.Minute),
		duration("AUTHPIPE_HTTP_READ_TIMEOUT", "http.read_timeout", func(c *Config) *time.Duration { return &c.HTTP.ReadTimeout }, 100*time.Millisecond, time.Hour),
		duration("AUTHPIPE_HTTP_WRITE_TIMEOUT", "http.write_timeout", func(c *Config) *time.Duration { return &c.HTTP.WriteTimeout }, 100*time.Millisecond, time.Hour),
		duration("AUTHPIPE_HTTP_IDLE_TIMEOUT", "http.idle_timeout", func(c *Config) *time.Duration { return &c.HTTP.IdleTimeout }, 100*time.Millisecond, time.Hour),
		integer("AUTHPIPE_HTTP_MAX_HEADER_BYTES", "http.max_header_bytes", func(c *Config) *int { return &c.HTTP.MaxHeaderBytes }, 4096, 16<<20),
		integer("AUTHPIPE_HTTP_MAX_BODY_BYTES", "http.max_body_bytes", func(c *Config) *int64 { return &c.HTTP.MaxBodyBytes }, 1024, 1<<30),

		// Auth0
		text("AUTH0_DOMAIN", "auth0.domain", func(c *Config) *string { return &c.Auth0.Domain }, checkDomain),
		text("AUTH0_CLIENT_ID", "auth0.client_id", func(c *Config) *string { return &c.Auth0.ClientID }, checkNoSpace),
		secret("AUTH0_CLIENT_SECRET", "auth0.client_secret", true, func(c *Config) *Secret { return &c.Auth0.ClientSecret }, nil),
		duration("AUTH0_LOG_RETENTION", "auth0.log_retention", func(c *Config) *time.Duration { return &c.Auth0.LogRetention }, time.Hour, 0),
		duration("AUTH0_POLL_INTERVAL", "auth0.poll_interval", func(c *Config) *time.Duration { return &c.Auth0.PollInterval }, 100*time.Millisecond, time.Hour),
		duration("AUTH0_REQUEST_TIMEOUT", "auth0.request_timeout", func(c *Config) *time.Duration { return &c.Auth0.RequestTimeout }, 100*time.Millisecond, 5*time.Minute),
		integer("AUTH0_PAGE_SIZE", "auth0.page_size", func(c *Config) *int { return &c.Auth0.PageSize }, 1, 100),
		ratio("AUTH0_RATE_LIMIT_SHARE", "auth0.rate_limit_share", func(c *Config) *float64 { return &c.Auth0.RateLimitShare }, true),

		// Log Streams (see stream.go)
		optional(text("AUTHPIPE_STREAM_LISTEN", "stream.listen", func(c *Config) *string { return &c.Stream.Listen }, checkListen)),
		secret("AUTH0_STREAM_TOKEN", "auth0.stream_token", false, func(c *Config) *Secret { return &c.Auth0.StreamToken }, checkStreamToken),
		duration("AUTHPIPE_STREAM_HEALTHY_WINDOW", "stream.healthy_window", func(c *Config) *time.Duration { return &c.Stream.HealthyWindow }, 10*time.Second, 24*time.Hour),
		duration("AUTHPIPE_STREAM_POLL_INTERVAL", "stream.poll_interval", func(c *Config) *time.Duration { return &c.Stream.PollInterval }, 100*time.Millisecond, time.Hour),

		// Segment
		secret("SEGMENT_WRITE_KEY", "segment.write_key", true, func(c *Config) *Secret { return &c.Segment.WriteKey }, nil),
		text("SEGMENT_ENDPOINT", "segment.endpoint", func(c *Config) *string { return &c.Segment.Endpoint }, httpURL("https://events.eu1.segmentapis.com")),
		integer("SEGMENT_BATCH_SIZE", "segment.batch_size", func(c *Config) *int { return &c.Segment.BatchSize }, 1, 2500),
		duration("SEGMENT_FLUSH_INTERVAL", "segment.flush_interval", func(c *Config) *time.Duration { return &c.Segment.FlushInterval }, 10*time.Millisecond, 5*time.Minute),
		integer("SEGMENT_MAX_IN_FLIGHT", "segment.max_in_flight", func(c *Config) *int { return &c.Segment.MaxInFlight }, 1, 100000),

		// Forwarding
		typeList("AUTHPIPE_FORWARD_INCLUDE_TYPES", "forward.include_types", func(c *Config) *[]string { return &c.Forward.IncludeTypes }),
		typeList("AUTHPIPE_FORWARD_EXCLUDE_TYPES", "forward.exclude_types", func(c *Config) *[]string { return &c.Forward.ExcludeTypes }),

		// Redis
		secret("REDIS_URL", "redis.url", false, func(c *Config) *Secret { return &c.Redis.URL }, checkRedisURL),
		boolean("AUTHPIPE_REQUIRE_SAFE_REDIS", "redis.require_safe", func(c *Config) *bool { return &c.Redis.RequireSafe }),

		// Buffer
		integer("AUTHPIPE_BUFFER_MAX_EVENTS", "buffer.max_events", func(c *Config) *int64 { return &c.Buffer.MaxEvents }, 1, math.MaxInt64),
		integer("AUTHPIPE_MAX_DELIVERIES", "buffer.max_deliveries", func(c *Config) *int { return &c.Buffer.MaxDeliveries }, 1, 1000),
		duration("AUTHPIPE_RECLAIM_IDLE", "buffer.reclaim_idle", func(c *Config) *time.Duration { return &c.Buffer.ReclaimIdle }, 100*time.Millisecond, 24*time.Hour),
		text("AUTHPIPE_CONSUMER", "buffer.consumer", func(c *Config) *string { return &c.Buffer.Consumer }, checkConsumer),
		duration("AUTHPIPE_LEASE_TTL", "buffer.lease_ttl", func(c *Config) *time.Duration { return &c.Buffer.LeaseTTL }, time.Second, 10*time.Minute),

		// Alerting
		ratio("AUTHPIPE_LAG_ALERT_RATIO", "lag_alert_ratio", func(c *Config) *float64 { return &c.LagAlertRatio }, false),
		optional(text("ALERTMANAGER_URL", "alertmanager_url", func(c *Config) *string { return &c.AlertmanagerURL }, httpURL("http://alertmanager:9093"))),
		optional(text("AUTHPIPE_ALERT_WEBHOOK_URL", "alert_webhook_url", func(c *Config) *string { return &c.AlertWebhookURL }, httpURL("https://hooks.example.com/authpipe"))),

		// Privacy
		secret("AUTHPIPE_HASH_KEY", "hash_key", false, func(c *Config) *Secret { return &c.HashKey }, checkHashKey),
		piiAction("AUTHPIPE_PII_USER_NAME", "pii.user_name", func(c *Config) *string { return &c.PII.UserName }),
		piiAction("AUTHPIPE_PII_EMAIL", "pii.email", func(c *Config) *string { return &c.PII.Email }),
		piiAction("AUTHPIPE_PII_IP", "pii.ip", func(c *Config) *string { return &c.PII.IP }),
		piiAction("AUTHPIPE_PII_USER_AGENT", "pii.user_agent", func(c *Config) *string { return &c.PII.UserAgent }),

		// Admin API
		adminAudience(),
		optional(text("AUTHPIPE_ADMIN_ISSUER", "admin.issuer", func(c *Config) *string { return &c.Admin.Issuer }, httpURL("https://your-tenant.eu.auth0.com/"))),
		optional(text("AUTHPIPE_ADMIN_JWKS_URL", "admin.jwks_url", func(c *Config) *string { return &c.Admin.JWKSURL }, httpURL("https://your-tenant.eu.auth0.com/.well-known/jwks.json"))),
		secret("AUTHPIPE_ADMIN_STATIC_TOKEN", "admin.static_token", false, func(c *Config) *Secret { return &c.Admin.StaticToken }, checkStaticToken),
		text("AUTHPIPE_ADMIN_AUDIT_LOG", "admin.audit_log", func(c *Config) *string { return &c.Admin.AuditLog }, checkAuditLog),
		duration("AUTHPIPE_ADMIN_AUDIT_RETENTION", "admin.audit_retention", func(c *Config) *time.Duration { return &c.Admin.AuditRetention }, time.Hour, 0),

		// Logging
		lower(text("AUTHPIPE_LOG_LEVEL", "log.level", func(c *Config) *string { return &c.LogLevel }, oneOf("debug", "info", "warn", "error"))),
		lower(text("AUTHPIPE_LOG_FORMAT", "log.format", func(c *Config) *string { return &c.LogFormat }, oneOf("json", "text"))),
		boolean("AUTHPIPE_PPROF", "debug.pprof", func(c *Config) *bool { return &c.Pprof }),
	}
}

// text is a required string setting; check may be nil.
func text(env, key string, field func(*Config) *string, check func(string) string) setting {
	return setting{
		env: env, key: key, required: true,
		set:   func(c *Config, v string) string { *field(c) = v; return "" },
		empty: func(c *Config) bool { return *field(c) == "" },
		check: func(c *Config) string {
			if check == nil {
				return ""
			}
			return check(*field(c))
		},
	}
}

// optional makes a setting's empty value valid.
func optional(s setting) setting {
	s.required = false
	return s
}

// lower makes a setting case-insensitive by storing its value lower-cased.
func lower(s setting) setting {
	set := s.set
	s.set = func(c *Config, v string) string { return set(c, strings.ToLower(v)) }
	return s
}

// secret is a Secret setting; check may be nil and must not quote the value.
func secret(env, key string, required bool, field func(*Config) *Secret, check func(string) string) setting {
	return setting{
		env: env, key: key, secret: true, required: required,
		set:   func(c *Config, v string) string { *field(c) = Secret(v); return "" },
		empty: func(c *Config) bool { return *field(c) == "" },
		check: func(c *Config) string {
			if check == nil {
				return ""
			}
			return check(field(c).Reveal())
		},
	}
}

// duration is a Go duration setting within [lo, hi]; hi 0 means no maximum.
func duration(env, key string, field func(*Config) *time.Duration, lo, hi time.Duration) setting {
	return setting{
		env: env, key: key, required: true,
		set: func(c *Config, v string) string {
			d, err := time.ParseDuration(v)
			if err != nil {
				def := Default()
				return fmt.Sprintf("%q is not a duration (e.g. %s)", v, formatDuration(*field(&def)))
			}
			*field(c) = d
			return ""
		},
		empty: func(*Config) bool { return false },
		check: func(c *Config) string {
			d := *field(c)
			switch {
			case hi == 0 && d < lo:
				return fmt.Sprintf("%s must be at least %s", formatDuration(d), formatDuration(lo))
			case hi != 0 && lo <= time.Nanosecond && (d <= 0 || d > hi):
				return fmt.Sprintf("%s must be more than 0 and at most %s", formatDuration(d), formatDuration(hi))
			case hi != 0 && (d < lo || d > hi):
				return fmt.Sprintf("%s must be between %s and %s", formatDuration(d), formatDuration(lo), formatDuration(hi))
			}
			return ""
		},
	}
}

// boolean is a true/false setting (also 1/0, as strconv.ParseBool reads).
func boolean(env, key string, field func(*Config) *bool) setting {
	return setting{
		env: env, key: key, required: true,
		set: func(c *Config, v string) string {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Sprintf("%q is not true or false", v)
			}
			*field(c) = b
			return ""
		},
		empty: func(*Config) bool { return false },
		check: func(*Config) string { return "" },
	}
}

// integer is a decimal integer setting within [lo, hi].
func integer[T int | int64](env, key string, field func(*Config) *T, lo, hi T) setting {
	return setting{
		env: env, key: key, required: true,
		set: func(c *Config, v string) string {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || int64(T(n)) != n {
				def := Default()
				return fmt.Sprintf("%q is not an integer (e.g. %d)", v, *field(&def))
			}
			*field(c) = T(n)
			return ""
		},
		empty: func(*Config) bool { return false },
		check: func(c *Config) string {
			n := *field(c)
			if n < lo || n > hi {
				if hi == T(math.MaxInt64) {
					return fmt.Sprintf("%d must be at least %d", n, lo)
				}
				return fmt.Sprintf("%d must be between %d and %d", n, lo, hi)
			}
			return ""
		},
	}
}

// ratio is a decimal fraction setting: more than 0 and less than 1, or at
// most 1 when upToOne.
func ratio(env, key string, field func(*Config) *float64, upToOne bool) setting {
	format := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	return setting{
		env: env, key: key, required: true,
		set: func(c *Config, v string) string {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				def := Default()
				return fmt.Sprintf("%q is not a decimal number (e.g. %s)", v, format(*field(&def)))
			}
			*field(c) = f
			return ""
		},
		empty: func(*Config) bool { return false },
		check: func(c *Config) string {
			switch f := *field(c); {
			case upToOne && (f <= 0 || f > 1):
				return format(f) + " must be more than 0 and at most 1"
			case !upToOne && (f <= 0 || f >= 1):
				return format(f) + " must be more than 0 and less than 1"
			}
			return ""
		},
	}
}

// typeList is an optional comma-separated list of Auth0 log type codes
// (case-insensitive, duplicates ignored), each checked against Auth0's table.
func typeList(env, key string, field func(*Config) *[]string) setting {
	return setting{
		env: env, key: key, list: true,
		set: func(c *Config, v string) string {
			var codes []string
			for _, code := range strings.Split(v, ",") {
				code = strings.ToLower(strings.TrimSpace(code))
				if code == "" {
					return fmt.Sprintf("%q has an empty item: list log type codes separated by commas (e.g. fsa,slo)", v)
				}
				if !slices.Contains(codes, code) {
					codes = append(codes, code)
				}
			}
			*field(c) = codes
			return ""
		},
		empty: func(c *Config) bool { return len(*field(c)) == 0 },
		check: func(c *Config) string { return checkTypes(*field(c)) },
	}
}

func checkTypes(codes []string) string {
	var unknown []string
	for _, code := range codes {
		if _, ok := auth0log.LookupType(code); !ok {
			unknown = append(unknown, strconv.Quote(code))
		}
	}
	switch len(unknown) {
	case 0:
		return ""
	case 1:
		return unknown[0] + " is not an Auth0 log type code (e.g. s, f, fp, fu, fsa, slo)"
	}
	return strings.Join(unknown, ", ") + " are not Auth0 log type codes (e.g. s, f, fp, fu, fsa, slo)"
}

// piiAction is a PII policy setting: keep, hash or drop (case-insensitive).
func piiAction(env, key string, field func(*Config) *string) setting {
	return lower(text(env, key, field, oneOf("keep", "hash", "drop")))
}

// formatDuration prints d without zero minutes and seconds: "1h", "1m", "8s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// CheckTenant reports whether name is a tenant name: 1 to 32 of a-z, 0-9,
// "_" and "-", starting with a letter or digit. It names the tenant's Redis
// keys and bbolt file, the tenant label and the Segment messageId (which
// stays under Segment's 100 characters with a 56-digit log_id); every
// component checks its tenant with it. The error does not quote name.
func CheckTenant(name string) error {
	ok := name != "" && len(name) <= 32
	for i := 0; ok && i < len(name); i++ {
		b := name[i]
		ok = b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || i > 0 && (b == '_' || b == '-')
	}
	if !ok {
		return errors.New(`must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`)
	}
	return nil
}

func checkTenant(v string) string {
	if err := CheckTenant(v); err != nil {
		return fmt.Sprintf("%q %v", v, err)
	}
	return ""
}

func checkNoSpace(v string) string {
	if strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return "must not contain spaces or control characters"
	}
	return ""
}

func checkConsumer(v string) string {
	if len(v) > 128 {
		return "must be at most 128 characters"
	}
	return checkNoSpace(v)
}

// checkDomain accepts "host[:port]", "https://host[:port]" and
// "http://host[:port]", with at most a trailing slash. Messages do not quote
// the value: a mistyped URL can carry credentials.
func checkDomain(v string) string {
	const want = `(e.g. tenant.eu.auth0.com, https://tenant.eu.auth0.com or http://127.0.0.1:8080)`
	raw := v
	if !strings.Contains(v, "://") {
		raw = "https://" + v
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "not a host name or URL " + want
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be a host name or an http:// or https:// URL " + want
	case u.User != nil:
		return "must not contain a user name or password " + want
	case u.Hostname() == "":
		return "missing host " + want
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "must not have a path or query: authpipe adds the API path " + want
	}
	return ""
}

// httpURL returns a check for an absolute http(s) URL. It does not quote the
// value: URLs carry credentials and webhook tokens.
func httpURL(example string) func(string) string {
	return func(v string) string {
		u, err := url.Parse(v)
		switch {
		case err != nil:
			return "not a valid URL (e.g. " + example + ")"
		case u.Scheme != "http" && u.Scheme != "https":
			return "must be an http:// or https:// URL (e.g. " + example + ")"
		case u.Hostname() == "":
			return "missing host (e.g. " + example + ")"
		}
		return ""
	}
}

// checkRedisURL accepts what go-redis' ParseURL accepts for redis:// and
// rediss://, and the Sentinel and Cluster forms of RedisOptions. The value is a secret, and a password with an unencoded "/",
// "?" or "#" spills into the path or query: so no message quotes any part
// of the value, go-redis' messages included.
func checkRedisURL(v string) string {
	const hint = " (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)"
	const encode = "; percent-encode special characters in the password"
	if isMultiRedisURL(v) {
		return checkMultiRedisURL(v)
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return "not a valid URL" + encode + hint
	case u.Scheme != "redis" && u.Scheme != "rediss" || u.Opaque != "":
		return "must start with redis:// or rediss:// (redis-sentinel:// or redis-cluster:// for Sentinel or Cluster)" + hint
	case strings.Contains(u.Path+u.RawQuery+u.Fragment, "@"):
		return "contains an @ after the host" + encode + hint
	case u.Hostname() == "" && u.User != nil:
		return "missing host" + encode + hint
	case u.Hostname() == "":
		return "missing host" + hint
	}
	if _, err := redis.ParseURL(v); err == nil {
		return ""
	}
	bare := *u
	bare.User, bare.RawQuery = nil, ""
	if _, err := redis.ParseURL(bare.String()); err != nil {
		return "path must be empty or a database number like /0" + hint
	}
	return "has a query option go-redis does not accept" + hint
}

func checkHashKey(v string) string {
	if len(v) < 16 {
		return "must be at least 16 characters (e.g. the output of: openssl rand -hex 32)"
	}
	return ""
}

func checkListen(v string) string {
	_, port, err := net.SplitHostPort(v)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Sprintf("%q is not host:port with a numeric port (e.g. :9464 or 127.0.0.1:9464)", v)
	}
	return ""
}

func oneOf(allowed ...string) func(string) string {
	return func(v string) string {
		for _, a := range allowed {
			if v == a {
				return ""
			}
		}
		return fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}
