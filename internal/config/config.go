// Package config builds authpipe's configuration from defaults, an optional
// YAML file and environment variables, and checks it before anything starts.
//
// Guarantee: Load either returns a Config that passed Validate, or an *Error
// naming every bad setting by its environment variable (and, for values from
// the file, by file:line and YAML key) in one line that starts "config: ".
// Nothing is silently ignored: unknown YAML keys, duplicate keys and values
// that do not parse are errors. Secret values (Auth0 client secret, Segment
// write key, Redis URL, hash key, Log Streams token) are of type Secret,
// which never prints, and no error message quotes them.
//
// Precedence, lowest first: Default(), the YAML file named by AUTHPIPE_CONFIG,
// environment variables. An empty value counts as unset. A secret may also be
// read from the file named by <NAME>_FILE (Docker and Kubernetes secrets).
// Several tenants: the file may list tenants (tenants:), each with its own
// name, Auth0 settings and Segment write key; what a tenant leaves unset is
// the top-level value. AllTenants lists them (or the one tenant of the
// top-level settings), ForTenant gives one tenant's view of the whole
// configuration. REDIS_URL may name one server, Sentinel or Cluster
// (RedisOptions).
//
// CONFIGURATION.md at the repository root lists every setting.
package config

import (
	"crypto/hmac"
	"crypto/sha256"
	"os"
	"strings"
	"time"
)

// EnvConfig names the environment variable that points at the YAML file.
const EnvConfig = "AUTHPIPE_CONFIG"

// Config is authpipe's whole configuration.
type Config struct {
	File            string        // path given by AUTHPIPE_CONFIG ("" if none)
	Tenant          string        // AUTHPIPE_TENANT: names the tenant's Redis keys and metric labels
	Tenants         []Tenant      // the file's tenants list; empty: the one tenant above (see AllTenants)
	Auth0           Auth0         // where the logs come from
	Stream          Stream        // the Log Streams receiver: logs pushed by Auth0; off unless Stream.Listen is set
	Segment         Segment       // where they go
	Forward         Forward       // which events are forwarded to Segment
	PII             PII           // what personal data leaves for Segment
	Redis           Redis         // the durable buffer
	Buffer          Buffer        // buffer limits and consumer identity
	Listen          string        // AUTHPIPE_LISTEN: address of /metrics and the probes
	HTTP            HTTP          // the HTTP server on Listen: timeouts and bounds
	DataDir         string        // AUTHPIPE_DATA_DIR: embedded buffer's directory
	RulesPath       string        // AUTHPIPE_RULES: threshold rule file or directory; "": alerts/thresholds.yml if present, else the shipped rules built in
	AlertmanagerURL string        // ALERTMANAGER_URL: optional, base URL of Alertmanager
	AlertWebhookURL string        // AUTHPIPE_ALERT_WEBHOOK_URL: optional, generic alert webhook
	HashKey         Secret        // AUTHPIPE_HASH_KEY: optional key for anonymousId hashing; see AnonymousIDKey
	ShutdownTimeout time.Duration // AUTHPIPE_SHUTDOWN_TIMEOUT: bound on the ordered shutdown
	LagAlertRatio   float64       // AUTHPIPE_LAG_ALERT_RATIO: share of the log retention at which the lag alert fires
	LogLevel        string        // AUTHPIPE_LOG_LEVEL: debug, info, warn or error
	LogFormat       string        // AUTHPIPE_LOG_FORMAT: json or text
	Pprof           bool          // AUTHPIPE_PPROF: serve Go's profiles under /debug/pprof/
	Admin           Admin         // the admin API under /api/v1/; off unless configured
}

// Auth0 configures the Auth0 Management API client and poller. A tenant of
// the tenants list may set every auth0.* setting for itself, so each must
// store into this struct (see Tenant).
type Auth0 struct {
	// Domain is a bare host ("tenant.eu.auth0.com", HTTPS), an https:// URL,
	// or an http:// URL for plain HTTP to a local simulator.
	Domain         string
	ClientID       string
	ClientSecret   Secret
	LogRetention   time.Duration // how long Auth0 keeps logs; also the buffer's retention
	PollInterval   time.Duration // pause between polls once caught up
	RequestTimeout time.Duration // per HTTP request
	PageSize       int           // logs per request (take), 1..100
	RateLimitShare float64       // largest share of the tenant's logs rate limit to use, (0, 1]
	StreamToken    Secret        // the Authorization header of the tenant's Log Stream (see Stream)
}

// Insecure reports whether Domain asks for plain HTTP (a local simulator).
func (a Auth0) Insecure() bool {
	return strings.HasPrefix(strings.ToLower(a.Domain), "http://")
}

// Host returns Domain as host[:port], without scheme or trailing slash: the
// form go-auth0's management.New expects.
func (a Auth0) Host() string {
	d := a.Domain
	if i := strings.Index(d, "://"); i >= 0 {
		d = d[i+len("://"):]
	}
	return strings.TrimSuffix(d, "/")
}

// Segment configures delivery to Segment.
type Segment struct {
	WriteKey      Secret
	Endpoint      string        // base URL; EU workspaces need https://events.eu1.segmentapis.com
	BatchSize     int           // messages per batch, 1..2500
	FlushInterval time.Duration // longest wait before a partial batch is sent
	MaxInFlight   int           // messages handed to Segment and not yet acknowledged
}

// Forward selects, by Auth0 log type code, the events forwarded to Segment.
// Filtered events are acknowledged unsent; threshold checks still see them.
type Forward struct {
	IncludeTypes []string // forward only these types; empty: every type
	ExcludeTypes []string // never forward these types; wins over IncludeTypes
}

// PII says, per kind of personal data, what leaves for Segment: "keep",
// "hash" (keyed by AnonymousIDKey) or "drop". user_id is always kept.
type PII struct {
	UserName  string // user_name fields; an e-mail address also follows Email
	Email     string // e-mail addresses anywhere in the event
	IP        string // ip fields and IP addresses anywhere; location_info follows
	UserAgent string // user_agent fields
}

// HTTP configures the HTTP server on Listen (metrics, probes, status page,
// admin API): how long a client may take, and how much it may send.
type HTTP struct {
	ReadHeaderTimeout time.Duration // to read a request's headers
	ReadTimeout       time.Duration // to read a whole request, body included
	WriteTimeout      time.Duration // from the end of the headers to the end of the response
	IdleTimeout       time.Duration // a kept-alive connection waiting for its next request
	MaxHeaderBytes    int           // request line and headers; larger: 431
	MaxBodyBytes      int64         // request body; larger: 413, or cut when read
}

// Redis configures the Redis Streams buffer.
type Redis struct {
	// URL is redis:// or rediss://, possibly with a password. Empty selects
	// the embedded buffer in DataDir.
	URL Secret
	// RequireSafe refuses to start on a Redis without persistence or with
	// an eviction policy other than noeviction (see buffer.InspectRedis).
	RequireSafe bool
}

// Buffer configures the durable buffer's limits.
type Buffer struct {
	MaxEvents     int64         // backlog at which polling pauses
	MaxDeliveries int           // attempts before an entry is dead-lettered
	ReclaimIdle   time.Duration // pending this long without progress → reclaimed by another consumer
	Consumer      string        // consumer name in the Redis consumer group
	LeaseTTL      time.Duration // lease period of each tenant's poller lease and of the threshold scheduler lease
}

// Default returns the configuration used for every setting left unset.
// The required settings (Auth0 domain, client id and secret, Segment write
// key) are empty.
func Default() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "authpipe"
	}
	return Config{
		Tenant: "default",
		Auth0: Auth0{
			LogRetention:   144 * time.Hour,
			PollInterval:   10 * time.Second,
			RequestTimeout: 30 * time.Second,
			PageSize:       100,
			RateLimitShare: 0.8,
		},
		Stream: Stream{HealthyWindow: 2 * time.Minute, PollInterval: 5 * time.Minute},
		Segment: Segment{
			Endpoint:      "https://api.segment.io",
			BatchSize:     250,
			FlushInterval: time.Second,
			MaxInFlight:   10000,
		},
		PII: PII{UserName: "hash", Email: "hash", IP: "hash", UserAgent: "hash"},
		Buffer: Buffer{
			MaxEvents:     2000000,
			MaxDeliveries: 10,
			ReclaimIdle:   60 * time.Second,
			Consumer:      host,
			LeaseTTL:      15 * time.Second,
		},
		Listen: ":9464",
		HTTP: HTTP{
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			MaxBodyBytes:      1 << 20,
		},
		DataDir:         "./data",
		ShutdownTimeout: 8 * time.Second,
		LagAlertRatio:   0.5,
		LogLevel:        "info",
		LogFormat:       "json",
		Admin:           Admin{AuditLog: "stdout", AuditRetention: 720 * time.Hour},
	}
}

// hashKeyLabel is the HMAC message that derives the anonymousId key from the
// Segment write key. Changing it changes every derived anonymousId.
const hashKeyLabel = "authpipe anonymousId key v1"

// AnonymousIDKey returns the key for hashing anonymousIds: HashKey when set,
// else HMAC-SHA256(key = Segment write key, message = "authpipe anonymousId
// key v1"). The derived key changes when the write key is rotated; set
// AUTHPIPE_HASH_KEY to keep anonymousIds stable across rotations.
func (c *Config) AnonymousIDKey() Secret {
	if c.HashKey != "" {
		return c.HashKey
	}
	mac := hmac.New(sha256.New, []byte(c.Segment.WriteKey.Reveal()))
	mac.Write([]byte(hashKeyLabel))
	return Secret(mac.Sum(nil))
}

// Error lists every problem found in a configuration, each naming the
// setting by its environment variable.
type Error struct {
	Problems []string
}

// Error joins the problems into one line starting "config: ".
func (e *Error) Error() string {
	msg := "config: " + strings.Join(e.Problems, "; ")
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg) // a path may hold a line break
}

// Validate checks every setting and returns an *Error listing all problems,
// in the order of CONFIGURATION.md, or nil.
func (c *Config) Validate() error {
	var problems []string
	for _, s := range settings() {
		if len(c.Tenants) > 0 && (topLevelOnly[s.env] || s.env == "SEGMENT_WRITE_KEY" && s.empty(c)) {
			continue // each tenant brings its own
		}
		if msg := s.validate(c); msg != "" {
			problems = append(problems, s.describe(msg, s.env))
		}
	}
	problems = append(problems, c.validateTenants()...)
	problems = append(problems, c.streamProblems()...)
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// Load builds the configuration: Default(), then the YAML file named by
// AUTHPIPE_CONFIG if set, then the environment (env wins), then Validate.
// getenv is os.LookupEnv outside tests. On error the Config is nil and the
// error is an *Error.
func Load(getenv func(string) (string, bool)) (*Config, error) {
	return load(getenv, readFileLimited)
}
