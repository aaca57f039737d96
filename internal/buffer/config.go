package buffer

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/metrics"
)

// Defaults applied by NewRedis to zero Config fields.
const (
	DefaultRetention     = 144 * time.Hour
	DefaultMaxDeliveries = 10
	// MinRetention guards against unit mistakes ("144" read as nanoseconds):
	// the retention also bounds dedupe, so it must cover any re-poll.
	MinRetention = time.Minute
	// TrimInterval is how often authpipe run trims each buffer (Trim): how
	// long acknowledged entries stay in Redis or the embedded file at most,
	// beyond a slow consumer group.
	TrimInterval = 10 * time.Second
)

// Config configures one tenant's buffer.
type Config struct {
	// Tenant names the tenant; all its keys are authpipe:{Tenant}:<name>.
	Tenant string
	// Retention is how long log_ids stay in the dedupe record; default
	// 144h, the Auth0 retention. Entries leave the stream once every
	// consumer group acknowledged them; while the stream has no group, they
	// leave after the retention. Trim never removes pending or undelivered
	// entries, whatever their age.
	Retention time.Duration
	// MaxDeliveries is how often an entry is delivered before Reclaim (or
	// ReadPending) moves it to the dead-letter stream; default 10.
	MaxDeliveries int
	// MaxEvents is the back-pressure bound: Full reports true when the
	// backlog of the slowest group reaches it. 0 means never full.
	MaxEvents int64
}

// Validate checks the configuration. Zero Retention and MaxDeliveries are
// valid: they mean the defaults.
func (c Config) Validate() error {
	var errs []error
	if err := config.CheckTenant(c.Tenant); err != nil {
		errs = append(errs, fmt.Errorf("buffer tenant %q: %w", c.Tenant, err))
	}
	if c.Retention < 0 || (c.Retention > 0 && c.Retention < MinRetention) {
		errs = append(errs, fmt.Errorf("buffer retention %s: want at least %s (0 for the default %s)", c.Retention, MinRetention, DefaultRetention))
	}
	if c.MaxDeliveries < 0 {
		errs = append(errs, fmt.Errorf("buffer max deliveries %d: want at least 1 (0 for the default %d)", c.MaxDeliveries, DefaultMaxDeliveries))
	}
	if c.MaxEvents < 0 {
		errs = append(errs, fmt.Errorf("buffer max events %d: want 0 (unbounded) or more", c.MaxEvents))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, DefaultMaxDeliveries)
	return c
}

// Deps are the injected collaborators of a buffer. Zero values get
// defaults: a discarding logger, a fresh registry, the real clock, and stage
// counters registered nowhere.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	Stages     *metrics.Stages
}

func (d Deps) withDefaults() Deps {
	inject.Defaults(&d.Logger, &d.Registerer, &d.Clock)
	return d
}
