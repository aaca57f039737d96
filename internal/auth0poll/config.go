package auth0poll

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/authpipe/authpipe/internal/config"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultRetention      = 144 * time.Hour
	DefaultPollInterval   = 10 * time.Second
	DefaultPageSize       = 100
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultRateLimitShare = 0.8
	DefaultLagAlertRatio  = 0.5
	// DefaultStreamPollInterval and DefaultStreamHealthyWindow apply only
	// with a Log Stream (Deps.Stream).
	DefaultStreamPollInterval  = 5 * time.Minute
	DefaultStreamHealthyWindow = 2 * time.Minute

	// MaxPageSize is the largest `take` the logs API accepts in checkpoint mode.
	MaxPageSize = 100
)

// Config configures the poller of one tenant.
type Config struct {
	// Tenant is authpipe's name for the tenant: a metric label and log field.
	Tenant string
	// Domain is the Auth0 domain: a bare host ("acme.eu.auth0.com"),
	// "https://host", or "http://host:port" for plain HTTP to a local
	// simulator.
	Domain string
	// ClientID and ClientSecret are the machine-to-machine application's
	// credentials (client credentials grant, scope read:logs). The secret
	// is revealed only to the token request.
	ClientID     string
	ClientSecret config.Secret
	// Retention is how long Auth0 keeps logs on this tenant's plan (default
	// 144h). The first start backfills this window; a checkpoint older than
	// it is reported as a gap.
	Retention time.Duration
	// PollInterval is the wait after a page that was not full (default 10s),
	// and between checks while the buffer is full.
	PollInterval time.Duration
	// PageSize is the `take` of each request, 1–100 (default 100).
	PageSize int
	// RequestTimeout bounds each HTTP request, token requests included
	// (default 30s).
	RequestTimeout time.Duration
	// MaxBackoff caps the wait between attempts after errors (default 1m).
	MaxBackoff time.Duration
	// RateLimitShare is the largest share of the tenant's logs rate limit
	// the poller uses, 0 < share ≤ 1 (default 0.8): on average at most this
	// share of the bucket's refill rate, and never below (1 − share) of the
	// bucket's size in x-ratelimit-remaining. The rest is left to the
	// tenant's other Management API clients, which draw on the same bucket.
	RateLimitShare float64
	// LagAlertRatio is the share of Retention the checkpoint lag may reach
	// before operators are alerted, 0 < ratio < 1 (default 0.5). The poller
	// only exports it (authpipe_auth0_lag_alert_ratio), next to the
	// retention, for the Prometheus rule AuthpipeCheckpointLagHigh.
	LagAlertRatio float64
	// StreamPollInterval replaces PollInterval after a page that was not
	// full while the tenant's Log Stream (Deps.Stream) is healthy: it
	// delivered events within StreamHealthyWindow (defaults 5m and 2m).
	// Polling stays the proof that the stream missed nothing, at a pace
	// that spares the rate limit.
	StreamPollInterval  time.Duration
	StreamHealthyWindow time.Duration
}

func (c Config) withDefaults() Config {
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, DefaultRequestTimeout)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultMaxBackoff)
	c.RateLimitShare = cmp.Or(c.RateLimitShare, DefaultRateLimitShare)
	c.LagAlertRatio = cmp.Or(c.LagAlertRatio, DefaultLagAlertRatio)
	c.StreamPollInterval = cmp.Or(c.StreamPollInterval, max(DefaultStreamPollInterval, c.PollInterval))
	c.StreamHealthyWindow = cmp.Or(c.StreamHealthyWindow, DefaultStreamHealthyWindow)
	return c
}

// Validate reports every problem of the configuration, defaults applied
// first (zero durations and page size mean "default").
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := config.CheckTenant(c.Tenant); err != nil {
		errs = append(errs, fmt.Errorf("tenant %q: %w", c.Tenant, err))
	}
	if _, _, err := parseDomain(c.Domain); err != nil {
		errs = append(errs, err)
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client id is empty"))
	}
	if c.ClientSecret == "" {
		errs = append(errs, errors.New("client secret is empty"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"retention", c.Retention},
		{"poll interval", c.PollInterval},
		{"request timeout", c.RequestTimeout},
		{"max backoff", c.MaxBackoff},
		{"stream poll interval", c.StreamPollInterval},
		{"stream healthy window", c.StreamHealthyWindow},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s: must be positive", d.name, d.v))
		}
	}
	if c.PageSize < 1 || c.PageSize > MaxPageSize {
		errs = append(errs, fmt.Errorf("page size %d: want 1-%d", c.PageSize, MaxPageSize))
	}
	// Written so that NaN fails too.
	if !(c.RateLimitShare > 0 && c.RateLimitShare <= 1) {
		errs = append(errs, fmt.Errorf("rate limit share %v: want more than 0 and at most 1", c.RateLimitShare))
	}
	if !(c.LagAlertRatio > 0 && c.LagAlertRatio < 1) {
		errs = append(errs, fmt.Errorf("lag alert ratio %v: want more than 0 and less than 1", c.LagAlertRatio))
	}
	return errors.Join(errs...)
}

// parseDomain turns Domain into what management.New expects ("scheme://host"),
// and whether the connection is plain HTTP.
func parseDomain(domain string) (base string, insecure bool, err error) {
	if domain == "" {
		return "", false, errors.New("domain is empty")
	}
	raw := domain
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, fmt.Errorf("domain %q: %w", domain, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("domain %q: scheme must be http or https", domain)
	case u.Host == "":
		return "", false, fmt.Errorf("domain %q: no host", domain)
	case u.User != nil:
		return "", false, errors.New("domain: must not carry credentials")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", false, fmt.Errorf("domain %q: want a host, not a URL with a path or query", domain)
	}
	return u.Scheme + "://" + u.Host, u.Scheme == "http", nil
}
