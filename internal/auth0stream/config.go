package auth0stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultMaxBodyBytes bounds a request body. Auth0 does not document
	// the size of a stream's batches; they are small (a few logs, each a
	// few KB: a log event is at most tens of KB, and Auth0's own log
	// export extensions sent at most 100 logs per request). 10 MiB is room
	// for a hundred logs of 100 KB, while MaxInFlight bodies of that size
	// stay well within memory.
	DefaultMaxBodyBytes = 10 << 20
	// DefaultCommitTimeout bounds the wait for the buffer per request.
	DefaultCommitTimeout = 10 * time.Second
	// DefaultMaxInFlight bounds the requests whose records are being
	// committed at once.
	DefaultMaxInFlight = 16
)

// Buffer is what the receiver needs of a tenant's durable buffer; both
// backends of package buffer (Redis and Bolt) implement it.
type Buffer interface {
	// Append stores logs, skipping log_ids stored before (by any writer),
	// atomically, and returns how many were new. The receiver passes the
	// checkpoint "": the poller's checkpoint never moves for pushed logs.
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	// Full reports back-pressure: the buffer takes no more until it drains.
	Full(ctx context.Context) (bool, error)
	// Seen reports which log_ids the dedupe record holds.
	Seen(ctx context.Context, ids []string) ([]bool, error)
}

// Tenant is one tenant whose stream the receiver accepts.
type Tenant struct {
	// Name is the tenant: the path /auth0/logs/{Name}.
	Name string
	// Token is the value the stream's Authorization header must have,
	// verbatim (what was typed as the Authorization Token in Auth0, e.g.
	// "Bearer …"). Required. Revealed only to hash it.
	Token config.Secret
	// Buffer is where the tenant's pushed logs go, deduplicated with the
	// polled ones.
	Buffer Buffer
	// Registerer takes the tenant's metrics; the caller adds the tenant
	// label (metrics.Tenant). Nil: registered nowhere.
	Registerer prometheus.Registerer
}

// Config bounds the receiver. Zero fields get the defaults.
type Config struct {
	// MaxBodyBytes: a larger body is refused with 413 (DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// CommitTimeout bounds the wait for the buffer (its fill, the dedupe
	// read and the append) of one request; past it the answer is 503
	// (DefaultCommitTimeout).
	CommitTimeout time.Duration
	// MaxInFlight bounds the requests being committed at once: each holds
	// its body in memory. A request that finds no free slot within
	// CommitTimeout is answered 503 (DefaultMaxInFlight).
	MaxInFlight int
}

func (c Config) withDefaults() Config {
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.CommitTimeout = cmp.Or(c.CommitTimeout, DefaultCommitTimeout)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, DefaultMaxInFlight)
	return c
}

// Validate checks the configuration; zero fields are valid (defaults).
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("stream max body bytes %d: want more than 0 (0 for the default %d)", c.MaxBodyBytes, DefaultMaxBodyBytes))
	}
	if c.CommitTimeout < 0 {
		errs = append(errs, fmt.Errorf("stream commit timeout %s: want more than 0 (0 for the default %s)", c.CommitTimeout, DefaultCommitTimeout))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("stream max in flight %d: want more than 0 (0 for the default %d)", c.MaxInFlight, DefaultMaxInFlight))
	}
	return errors.Join(errs...)
}

func validateTenants(tenants []Tenant) error {
	if len(tenants) == 0 {
		return errors.New("stream receiver: no tenant")
	}
	var errs []error
	names := map[string]bool{}
	tokens := map[config.Secret]string{}
	for i, t := range tenants {
		switch {
		case config.CheckTenant(t.Name) != nil:
			errs = append(errs, fmt.Errorf("stream tenant %d: name %q: %w", i, t.Name, config.CheckTenant(t.Name)))
		case names[t.Name]:
			errs = append(errs, fmt.Errorf("stream tenant %q is listed twice", t.Name))
		}
		names[t.Name] = true
		switch other, dup := tokens[t.Token]; {
		case t.Token == "":
			errs = append(errs, fmt.Errorf("stream tenant %q: no token: the Authorization header is required", t.Name))
		case dup:
			// One tenant's stream could then write into the other's buffer.
			errs = append(errs, fmt.Errorf("stream tenants %q and %q have the same token: give each its own", other, t.Name))
		default:
			tokens[t.Token] = t.Name
		}
		if t.Buffer == nil {
			errs = append(errs, fmt.Errorf("stream tenant %q: no buffer", t.Name))
		}
	}
	return errors.Join(errs...)
}

// Deps are the receiver's injected collaborators. Zero values get
// defaults: a discarding logger, a fresh registry, the real clock, no
// callback.
type Deps struct {
	Logger *slog.Logger
	// Registerer takes the count of requests that reach no tenant (an
	// unknown path or tenant name); the caller labels them as it labels
	// the tenants' (with tenant="", so no name from the internet ever
	// becomes a label value).
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	// OnCommit, when set, is called once per request whose records (one
	// or more) were committed to the buffer, right after the commit and before the
	// answer, from the goroutine that committed. It is called also when the
	// commit finished only after the request had been answered 503 (timed
	// out): the records are stored, and Auth0's retry will find them all
	// duplicates. It must return quickly: the answer waits for it.
	OnCommit func(Commit)
}

func (d Deps) withDefaults() Deps {
	inject.Defaults(&d.Logger, &d.Registerer, &d.Clock)
	return d
}
