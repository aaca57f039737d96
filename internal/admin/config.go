package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/audit"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/thresholds"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultLeeway         = 30 * time.Second
	DefaultJWKSMinRefresh = 30 * time.Second
	DefaultJWKSMaxAge     = 10 * time.Minute
	DefaultJWKSTimeout    = 5 * time.Second
	DefaultGroup          = "forward"
	// minStaticToken is the shortest static token accepted.
	minStaticToken = 32
)

// Config configures the admin API. JWT mode is on when Audience is set,
// static-token mode when StaticToken is set; at least one must be.
type Config struct {
	// Issuer is the iss every token must carry; Auth0's is
	// "https://<tenant domain>/". Required in JWT mode.
	Issuer string
	// Audience is the identifier of the API registered in Auth0 for
	// authpipe; tokens must list it in aud.
	Audience string
	// JWKSURL is where the signing keys are; required in JWT mode
	// (usually Issuer + ".well-known/jwks.json").
	JWKSURL string
	// Leeway is the clock skew allowed on exp, nbf and iat; default 30s.
	Leeway time.Duration
	// JWKSMinRefresh is the least time between two fetches of the key set;
	// default 30s.
	JWKSMinRefresh time.Duration
	// JWKSMaxAge is how long a fetched key set is used before it is
	// fetched again; default 10m.
	JWKSMaxAge time.Duration
	// StaticToken, when set, is a token allowed every operation (local
	// use). At least 32 characters.
	StaticToken config.Secret
	// Secrets are the configured secrets (config.Config.Secrets): a path or
	// query segment equal to one (or to StaticToken) is masked in the audit
	// entries, as is every segment of audit.MaskLength characters or more.
	Secrets []config.Secret
	// Group is the consumer group whose backlog status reports; default
	// "forward".
	Group string
	// Retention is Auth0's log retention, reported with the checkpoint lag.
	Retention time.Duration
}

// JWT reports whether JWT mode is on.
func (c Config) JWT() bool { return c.Audience != "" }

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if !c.JWT() && c.StaticToken == "" {
		errs = append(errs, errors.New("admin API: set an audience (JWT mode) or a static token"))
	}
	if c.JWT() {
		if c.Issuer == "" {
			errs = append(errs, errors.New("admin API: JWT mode needs the issuer"))
		}
		if u, err := url.Parse(c.JWKSURL); c.JWKSURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, errors.New("admin API: JWT mode needs an http(s) JWKS URL"))
		}
	}
	if c.StaticToken != "" && len(c.StaticToken.Reveal()) < minStaticToken {
		errs = append(errs, fmt.Errorf("admin API: the static token must be at least %d characters", minStaticToken))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"leeway", c.Leeway}, {"JWKS minimum refresh", c.JWKSMinRefresh}, {"JWKS max age", c.JWKSMaxAge}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("admin API: %s %s must not be negative", d.name, d.v))
		}
	}
	if c.Leeway > 5*time.Minute {
		errs = append(errs, fmt.Errorf("admin API: leeway %s: at most 5m", c.Leeway))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.Leeway = cmp.Or(c.Leeway, DefaultLeeway)
	c.JWKSMinRefresh = cmp.Or(c.JWKSMinRefresh, DefaultJWKSMinRefresh)
	c.JWKSMaxAge = cmp.Or(c.JWKSMaxAge, DefaultJWKSMaxAge)
	c.Group = cmp.Or(c.Group, DefaultGroup)
	return c
}

// Deps are the injected collaborators. Zero values get defaults: a
// discarding logger, a fresh registry, the real clock, an HTTP client with
// a 5s timeout for the key set, and the host name. Trail is required.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	HTTPClient *http.Client
	// Trail stores the audit entries (package audit); every request's
	// entry is stored before anything is done or shown.
	Trail *audit.Trail
	// Host names this replica in the entries; default the host name.
	Host string
}

func (d Deps) withDefaults() Deps {
	inject.Defaults(&d.Logger, &d.Registerer, &d.Clock)
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: DefaultJWKSTimeout}
	}
	if d.Host == "" {
		d.Host = audit.Hostname()
	}
	return d
}

// Buffer is what the API needs of a tenant's buffer (*buffer.Redis and
// *buffer.Bolt both are one).
type Buffer interface {
	Checkpoint(ctx context.Context) (string, error)
	Stats(ctx context.Context, group string) (buffer.Stats, error)
	DeadLettersAfter(ctx context.Context, after string, count int) ([]buffer.DeadLetter, error)
	ReplayDeadLetters(ctx context.Context, ids []string) (int, error)
	DropDeadLetters(ctx context.Context, ids []string) (int, error)
}

var (
	_ Buffer = (*buffer.Redis)(nil)
	_ Buffer = (*buffer.Bolt)(nil)
)

// Rules is what the API needs of the threshold engine (*thresholds.Engine).
type Rules interface {
	Rules() *rules.Set
	Reload() error
	Leader() bool
}

var _ Rules = (*thresholds.Engine)(nil)

// Backfiller runs backfills: a re-poll of a window of Auth0's logs into the
// buffer. Start begins one in the background (ctx only bounds the start:
// the backfill runs until done or the worker stops) and returns its id; it
// returns an error matching ErrBackfillRunning while one runs, and one
// matching ErrBackfillInvalid for a since it cannot serve (outside the
// retention). Progress reports the current or last backfill.
type Backfiller interface {
	Start(ctx context.Context, since time.Time) (id string, err error)
	Progress() BackfillStatus
}

// Errors a Backfiller's Start returns (wrapped), answered 409 and 400.
var (
	ErrBackfillRunning = errors.New("a backfill is running already")
	ErrBackfillInvalid = errors.New("invalid backfill")
)

// BackfillStatus is a backfill's progress.
type BackfillStatus struct {
	ID         string     `json:"id"`
	State      string     `json:"state"` // idle, running, done, failed
	Since      time.Time  `json:"since"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Pages      int64      `json:"pages"`
	Events     int64      `json:"events"` // logs fetched
	Added      int64      `json:"added"`  // logs new to the buffer (the rest were duplicates)
	Error      string     `json:"error,omitempty"`
}

// Tenant is one tenant the API serves.
type Tenant struct {
	Name   string
	Buffer Buffer
}

// Sources are what the API reports on and acts on.
type Sources struct {
	// Tenants are the configured tenants, at least one; the first is the
	// default of ?tenant=.
	Tenants []Tenant
	// Metrics is the process's registry: status and breach state are read
	// from it (status.Snapshot), so they match /metrics.
	Metrics prometheus.Gatherer
	// Rules is the threshold engine; nil when threshold checks are off.
	Rules Rules
	// Backfill runs backfills; nil answers 501.
	Backfill Backfiller
	// Ready reports the worker's readiness; nil reports true.
	Ready func() bool
}
