package forward

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/analytics-go/v3"

	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/metrics"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultBatchSize         = 250
	DefaultFlushInterval     = time.Second
	DefaultMaxInFlight       = 10000
	DefaultGroup             = "forward"
	DefaultReadCount         = 500
	DefaultReclaimIdle       = 60 * time.Second
	DefaultMinBackoff        = 100 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
	DefaultDrainTimeout      = 5 * time.Second
	DefaultIsolationInFlight = 100
)

const (
	// maxSegmentBatch is Segment's limit of messages per request.
	maxSegmentBatch = 2500
	// analyticsMaxBatches is analytics-go's limit of concurrent batches;
	// beyond it messages fail with ErrTooManyRequests.
	analyticsMaxBatches = 1000
	// minMessagesPerBatch is the fewest messages a batch can hold when every
	// message is near the 32 kB limit (500 kB per request).
	minMessagesPerBatch = 15
	// maxBatchesInFlight keeps the forwarder well below analyticsMaxBatches.
	maxBatchesInFlight = 700
)

// Config configures the forwarder of one tenant. Zero fields take the
// defaults above (Consumer: the host name).
type Config struct {
	Tenant   string        // names the messageId and metric series
	WriteKey config.Secret // Segment source write key; revealed only to analytics-go
	Endpoint string        // default analytics.DefaultEndpoint (https://api.segment.io)

	BatchSize     int           // messages per Segment request; default 250, max 2500
	FlushInterval time.Duration // analytics-go flush interval; default 1s
	MaxInFlight   int           // buffer entries held (read, not yet resolved); default 10000

	Group       string        // consumer group; default "forward"
	Consumer    string        // consumer name, stable across restarts of this replica; default host name
	ReadCount   int           // entries per read; default 500
	ReclaimIdle time.Duration // pending entries idle this long are taken from other consumers; default 60s

	MinBackoff time.Duration // first retry wait; default 100ms
	MaxBackoff time.Duration // longest retry wait; default 30s

	HashKey config.Secret // key of the anonymousId and PII hashes; required, revealed only to the hashes

	Filter Filter    // which log types are forwarded; zero: all
	PII    PIIPolicy // what personal data leaves for Segment; zero: user_id kept, the rest hashed

	DrainTimeout      time.Duration // how long shutdown waits for messages in flight; default 5s
	IsolationInFlight int           // messages re-sent alone at a time after a batch was rejected; default 100
}

func (c Config) withDefaults() Config {
	c.Endpoint = strings.TrimRight(cmp.Or(c.Endpoint, analytics.DefaultEndpoint), "/")
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.FlushInterval = cmp.Or(c.FlushInterval, DefaultFlushInterval)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	c.Group = cmp.Or(c.Group, DefaultGroup)
	if c.Consumer == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Consumer = h
		}
	}
	c.ReadCount = cmp.Or(c.ReadCount, DefaultReadCount)
	c.ReclaimIdle = cmp.Or(c.ReclaimIdle, DefaultReclaimIdle)
	c.MinBackoff = cmp.Or(c.MinBackoff, DefaultMinBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultMaxBackoff)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.IsolationInFlight = cmp.Or(c.IsolationInFlight, DefaultIsolationInFlight)
	c.PII = c.PII.withDefaults()
	return c
}

// Validate reports the first problem of the config with defaults applied.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := config.CheckTenant(c.Tenant); err != nil {
		bad("tenant %q: %v", c.Tenant, err)
	}
	if c.WriteKey == "" {
		bad("segment write key is required")
	}
	if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("segment endpoint %q: want an http(s) URL", redactURL(c.Endpoint))
	}
	if c.BatchSize < 1 || c.BatchSize > maxSegmentBatch {
		bad("batch size %d: want 1-%d", c.BatchSize, maxSegmentBatch)
	}
	if c.FlushInterval < 0 {
		bad("flush interval %s: want > 0", c.FlushInterval)
	}
	if c.MaxInFlight < 1 {
		bad("max in flight %d: want >= 1", c.MaxInFlight)
	} else if per := min(c.BatchSize, minMessagesPerBatch); (c.MaxInFlight+per-1)/per > maxBatchesInFlight {
		bad("max in flight %d with batch size %d could need %d concurrent Segment batches; analytics-go fails messages beyond %d: want max in flight <= %d",
			c.MaxInFlight, c.BatchSize, (c.MaxInFlight+per-1)/per, analyticsMaxBatches, per*maxBatchesInFlight)
	}
	if c.Group == "" {
		bad("consumer group is required")
	}
	if c.Consumer == "" {
		bad("consumer name is required (the host name was not available)")
	}
	if c.ReadCount < 1 {
		bad("read count %d: want >= 1", c.ReadCount)
	}
	if c.ReclaimIdle < 100*time.Millisecond {
		bad("reclaim idle %s: want >= 100ms", c.ReclaimIdle)
	}
	if c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff {
		bad("backoff %s-%s: want 0 < min <= max", c.MinBackoff, c.MaxBackoff)
	}
	if c.HashKey == "" {
		bad("hash key is required: it keys the anonymousId of events without user_id and the PII hashes")
	}
	if err := c.Filter.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.PII.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DrainTimeout < 0 {
		bad("drain timeout %s: want > 0", c.DrainTimeout)
	}
	if c.IsolationInFlight < 1 || c.IsolationInFlight > maxBatchesInFlight {
		bad("isolation in flight %d: want 1-%d", c.IsolationInFlight, maxBatchesInFlight)
	}
	if len(errs) > 0 {
		return fmt.Errorf("forward config: %w", errors.Join(errs...))
	}
	return nil
}

// redactURL drops user info from a URL for error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparseable>"
	}
	return u.Redacted()
}

// Deps are the injected collaborators. Zero values get defaults: a discarding
// logger, a fresh registry, the real clock, stage counters registered nowhere,
// Segment request counters registered on Registerer.
type Deps struct {
	Logger *slog.Logger
	// Registerer takes the forwarder's metrics. It is the tenant's: the
	// caller adds the tenant label (metrics.Tenant, in
	// package pipeline).
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	Stages     *metrics.Stages
	// Requests counts the Segment requests of every tenant's forwarder
	// (NewRequests, on the application's registerer: the family has no
	// tenant label). Nil: a family of this forwarder's own, on Registerer.
	Requests *Requests
}

func (d Deps) withDefaults() Deps {
	inject.Defaults(&d.Logger, &d.Registerer, &d.Clock)
	return d
}
