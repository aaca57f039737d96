package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/auth0poll"
	"github.com/authpipe/authpipe/internal/auth0stream"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/forward"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/metrics"
)

// ForwardGroup is the buffer consumer group of the Segment forwarder.
const ForwardGroup = "forward"

// Buffer is what the pipeline needs of either buffer backend.
type Buffer interface {
	auth0poll.Buffer
	auth0stream.Buffer
	forward.Buffer
	Ping(ctx context.Context) error
	Trim(ctx context.Context) (int64, error)
	CheckLoss(ctx context.Context) error
}

var (
	_ Buffer = (*buffer.Redis)(nil)
	_ Buffer = (*buffer.Bolt)(nil)
)

// Store opens the tenants' buffers: on the Redis client every tenant
// shares when REDIS_URL is set, else each tenant's embedded buffer in
// AUTHPIPE_DATA_DIR. Close closes what it opened, the buffers first.
type Store struct {
	cfg     *config.Config
	logger  *slog.Logger
	reg     prometheus.Registerer
	tenants map[string]tenantMetrics // by name

	// Redis is the client the tenants share (one server, Sentinel or
	// Cluster: config.RedisOptions); nil with the embedded buffer.
	Redis  redis.UniversalClient
	closes []func() error // the embedded buffers' Close
}

// OpenStore builds the store of cfg (the whole configuration): with
// REDIS_URL, its Redis client, without calling Redis. Metrics go to reg,
// each tenant's with its label (Metrics).
func OpenStore(cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	inject.Defaults(&logger, &reg, nil)
	s := &Store{cfg: cfg, logger: logger, reg: reg, tenants: map[string]tenantMetrics{}}
	if cfg.Redis.URL == "" {
		return s, nil
	}
	opts, mode, err := config.RedisOptions(cfg.Redis.URL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("config: REDIS_URL: %w", err) // never quotes the URL
	}
	s.Redis = redis.NewUniversalClient(opts)
	logger.Info("using the Redis buffer", "redis", string(mode), "addrs", len(opts.Addrs))
	return s, nil
}

// Kind names the buffer backend in log lines: "redis" or "embedded".
func (s *Store) Kind() string {
	if s.Redis != nil {
		return "redis"
	}
	return "embedded"
}

// tenantMetrics is where one tenant's components register their metrics.
type tenantMetrics struct {
	reg    prometheus.Registerer // adds tenant=<name> to every series
	stages *metrics.Stages       // shared by the tenant's poller, buffer and forwarder
}

// Metrics returns the registerer of the tenant name and its stage
// counters. It is the one place a tenant's label is made: the store's
// registerer wrapped with tenant=<name> (metrics.Tenant), handed to each
// of the tenant's components, which register plain metrics and never
// know the label. Called while the components are built, from one
// goroutine; a second component of a kind on the same tenant fails to
// register (an error from its constructor).
func (s *Store) Metrics(name string) (prometheus.Registerer, *metrics.Stages) {
	tm, ok := s.tenants[name]
	if !ok {
		reg := metrics.Tenant(s.reg, name)
		tm = tenantMetrics{reg: reg, stages: metrics.NewStages(reg)}
		s.tenants[name] = tm
	}
	return tm.reg, tm.stages
}

// Buffer opens the buffer of the tenant whose view of the configuration
// is cfg (config.ForTenant). The embedded buffer's data dir is created if
// needed, and its file is locked until Close.
func (s *Store) Buffer(cfg *config.Config) (Buffer, error) {
	bcfg := buffer.Config{
		Tenant:        cfg.Tenant,
		Retention:     cfg.Auth0.LogRetention,
		MaxDeliveries: cfg.Buffer.MaxDeliveries,
		MaxEvents:     cfg.Buffer.MaxEvents,
	}
	reg, stages := s.Metrics(cfg.Tenant)
	deps := buffer.Deps{Logger: s.logger, Registerer: reg, Stages: stages}
	if s.Redis == nil {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("create AUTHPIPE_DATA_DIR: %w", err)
		}
		b, err := buffer.OpenBolt(cfg.DataDir, bcfg, deps)
		if err != nil {
			return nil, err
		}
		s.closes = append(s.closes, b.Close)
		s.logger.Info("using the embedded buffer", "tenant", cfg.Tenant, "path", b.Path())
		return b, nil
	}
	b, err := buffer.NewRedis(s.Redis, bcfg, deps)
	if err != nil {
		return nil, fmt.Errorf("build buffer: %w", err)
	}
	return b, nil
}

// Close closes the embedded buffers, then the Redis client.
func (s *Store) Close() error {
	var errs []error
	for _, c := range s.closes {
		if err := c(); err != nil {
			errs = append(errs, err)
		}
	}
	s.closes = nil
	if s.Redis != nil {
		if err := s.Redis.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			errs = append(errs, fmt.Errorf("close redis: %w", err))
		}
	}
	return errors.Join(errs...)
}

// NewPoller builds the Auth0 poller of the tenant whose view of the
// configuration is cfg, writing into buf, on the store's registry; stream
// is the tenant's Log Stream, nil when there is none.
func (s *Store) NewPoller(cfg *config.Config, buf auth0poll.Buffer, stream auth0poll.Stream) (*auth0poll.Poller, error) {
	reg, stages := s.Metrics(cfg.Tenant)
	p, err := auth0poll.New(PollerConfig(cfg), buf, auth0poll.Deps{Logger: s.logger, Registerer: reg, Stages: stages, Stream: stream})
	if err != nil {
		return nil, fmt.Errorf("build poller: %w", err)
	}
	return p, nil
}

// PollerConfig is the Auth0 poller's configuration for a tenant's view of
// the configuration (authpipe run, backfill and check).
func PollerConfig(cfg *config.Config) auth0poll.Config {
	return auth0poll.Config{
		Tenant:         cfg.Tenant,
		Domain:         cfg.Auth0.Domain,
		ClientID:       cfg.Auth0.ClientID,
		ClientSecret:   cfg.Auth0.ClientSecret,
		Retention:      cfg.Auth0.LogRetention,
		PollInterval:   cfg.Auth0.PollInterval,
		PageSize:       cfg.Auth0.PageSize,
		RequestTimeout: cfg.Auth0.RequestTimeout,
		RateLimitShare: cfg.Auth0.RateLimitShare,
		LagAlertRatio:  cfg.LagAlertRatio,
		// Used only with a Log Stream (auth0poll.Deps.Stream).
		StreamPollInterval:  cfg.Stream.PollInterval,
		StreamHealthyWindow: cfg.Stream.HealthyWindow,
	}
}
