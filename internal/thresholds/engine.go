package thresholds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/lease"
	"github.com/authpipe/authpipe/internal/logrepeat"
	"github.com/authpipe/authpipe/internal/thresholds/notify"
	"github.com/authpipe/authpipe/internal/thresholds/rules"
	"github.com/authpipe/authpipe/internal/thresholds/store"
)

// DefaultGroup is the consumer group the threshold counter reads the
// tenant's stream with.
const DefaultGroup = "thresholds"

// Defaults applied by New to zero Config fields.
const (
	DefaultLeaseTTL       = 15 * time.Second
	DefaultReloadInterval = 10 * time.Second
	DefaultResendInterval = time.Minute
	DefaultMaxGroups      = 1000
	DefaultMaxAlerts      = 20
	DefaultTopOffenders   = 5
	DefaultMaxCandidates  = 200
	DefaultReadCount      = 100
	DefaultReadBlock      = time.Second
	DefaultReclaimIdle    = time.Minute
	DefaultSendRetries    = 5
	DefaultSendBackoff    = time.Second
)

// GroupReader is how the engine reads either buffer: with its own
// consumer group.
type GroupReader interface {
	EnsureGroup(ctx context.Context, group string) error
	Read(ctx context.Context, group, consumer string, count int, block time.Duration) ([]buffer.Entry, error)
	ReadPending(ctx context.Context, group, consumer, after string, count int) ([]buffer.Entry, error)
	Reclaim(ctx context.Context, group, consumer string, minIdle time.Duration, count int) ([]buffer.Entry, error)
}

// Buffer is what the engine needs from the tenant's buffer
// (*buffer.Redis): its keys, its consumer-group reads, and its Redis client.
// Acknowledgement is not in it: the engine acknowledges in the same script
// that counts (see the package doc).
type Buffer interface {
	GroupReader
	Key(name string) string
	StreamKey() string
	Client() redis.UniversalClient
}

var _ Buffer = (*buffer.Redis)(nil)

// LocalBuffer is what the engine needs from an embedded, single-process
// buffer (*buffer.Bolt): its consumer-group reads, Ack, and ResetGroup to
// read the retained stream again at start (see the package doc).
type LocalBuffer interface {
	GroupReader
	ResetGroup(ctx context.Context, group string, from time.Time) error
	Ack(ctx context.Context, group string, ids ...string) error
}

var _ LocalBuffer = (*buffer.Bolt)(nil)

// Config configures one tenant's threshold engine.
type Config struct {
	// Tenant names the tenant; it is the tenant label of alerts and metrics.
	Tenant string
	// RulesPath is a rule file or a directory of *.yml rule files (AUTHPIPE_RULES).
	RulesPath string
	// Rules, if not nil, is the content of the one rule file, used instead
	// of reading RulesPath, which then only names it in errors and logs:
	// the shipped rules, embedded in the binary. Nothing is watched for
	// changes; Reload parses the same content again.
	Rules []byte
	// Buffer is the tenant's Redis buffer; the engine reads it with its own
	// consumer group. Set it or Local, not both.
	Buffer Buffer
	// Local is the tenant's embedded buffer (*buffer.Bolt, when REDIS_URL is
	// unset): the engine reads it with its own consumer group, keeps counts
	// and alert state in memory, rebuilds the counts from the buffer at
	// start, and always evaluates (one process). Redis and LeaseTTL are
	// not used. Set it or Buffer, not both.
	Local LocalBuffer
	// Redis holds counts, alert state and the lease. Default: Buffer.Client().
	Redis redis.UniversalClient
	// AlertmanagerURL, if set, is the Alertmanager the alerts are pushed to
	// (its base URL; /api/v2/alerts is appended).
	AlertmanagerURL string
	// WebhookURL, if set, receives the alerts as a JSON POST (notify.WebhookPayload).
	WebhookURL string
	// LeaseTTL is the lease period of the scheduler lease: a replica that
	// dies is replaced within it. Default 15s.
	LeaseTTL time.Duration
	// Consumer names this replica in the consumer group and the lease; it must
	// be unique among replicas and should be stable across restarts (the pod
	// or host name). Default: hostname-pid-random.
	Consumer string
	// Group is the consumer group. Default "thresholds".
	Group string
	// ReloadInterval is how often the rule files are polled for changes
	// (mtime and size). Default 10s; negative disables polling.
	ReloadInterval time.Duration
	// ResendInterval is how often active alerts are re-sent. Default 1m.
	ResendInterval time.Duration
	// ResolveHold bounds how long alerts stay unresolved after a buffer
	// error (or a start) while no event dated after it has been counted:
	// how long a quiet tenant's breach outlives an outage. Default 5m.
	ResolveHold time.Duration
	// MaxGroups caps the groups kept per rule and bucket. Default 1000.
	MaxGroups int
	// MaxAlertsPerRule caps the alerts (groups) active at once per rule;
	// further breaching groups show in the top_offenders annotation. Default 20.
	MaxAlertsPerRule int
	// TopOffenders is how many groups the top_offenders annotation lists. Default 5.
	TopOffenders int
	// ReadCount and ReadBlock are the batch size and the blocking time of
	// XREADGROUP. Defaults 100 and 1s.
	ReadCount int
	ReadBlock time.Duration
	// ReclaimIdle is how long an entry stays pending with a consumer (one
	// that died) before another replica takes it over. Default 1m.
	ReclaimIdle time.Duration
	// SendRetries and SendBackoff: attempts after the first, and the first
	// wait (doubling, at most 30s). Defaults 5 and 1s.
	SendRetries int
	SendBackoff time.Duration
	// DisableRealtime turns the real-time path off: alerts then come only
	// from the scheduled checks.
	DisableRealtime bool
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if err := config.CheckTenant(c.Tenant); err != nil {
		errs = append(errs, fmt.Errorf("thresholds tenant %q: %w", c.Tenant, err))
	}
	if c.RulesPath == "" {
		errs = append(errs, errors.New("thresholds rules path: empty"))
	}
	switch {
	case c.Buffer == nil && c.Local == nil:
		errs = append(errs, errors.New("thresholds buffer: missing"))
	case c.Buffer != nil && c.Local != nil:
		errs = append(errs, errors.New("thresholds buffer: both a Redis and an embedded buffer; want one"))
	}
	for _, u := range []struct{ name, v string }{{"alertmanager", c.AlertmanagerURL}, {"webhook", c.WebhookURL}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("thresholds %s URL: want http(s)://host[:port][/path]", u.name))
		}
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < lease.MinTTL {
		errs = append(errs, fmt.Errorf("thresholds lease ttl %s: want at least %s", c.LeaseTTL, lease.MinTTL))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"resend interval", c.ResendInterval}, {"resolve hold", c.ResolveHold}, {"read block", c.ReadBlock}, {"reclaim idle", c.ReclaimIdle}, {"send backoff", c.SendBackoff}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("thresholds %s %s: want more than 0 (0 for the default)", d.name, d.v))
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"max groups", c.MaxGroups}, {"max alerts per rule", c.MaxAlertsPerRule}, {"top offenders", c.TopOffenders}, {"read count", c.ReadCount}, {"send retries", c.SendRetries}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("thresholds %s %d: want more than 0 (0 for the default)", n.name, n.v))
		}
	}
	if c.MaxGroups == 1 {
		errs = append(errs, errors.New("thresholds max groups 1: want at least 2"))
	}
	if strings.ContainsAny(c.Consumer, " \r\n") {
		errs = append(errs, errors.New("thresholds consumer: contains white space"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Redis == nil && c.Buffer != nil {
		c.Redis = c.Buffer.Client()
	}
	c.LeaseTTL = cmp.Or(c.LeaseTTL, DefaultLeaseTTL)
	if c.Consumer == "" {
		c.Consumer = lease.DefaultOwner()
	}
	c.Group = cmp.Or(c.Group, DefaultGroup)
	c.ReloadInterval = cmp.Or(c.ReloadInterval, DefaultReloadInterval)
	c.ResendInterval = cmp.Or(c.ResendInterval, DefaultResendInterval)
	c.ResolveHold = cmp.Or(c.ResolveHold, DefaultResolveHold)
	c.MaxGroups = cmp.Or(c.MaxGroups, DefaultMaxGroups)
	c.MaxAlertsPerRule = cmp.Or(c.MaxAlertsPerRule, DefaultMaxAlerts)
	c.TopOffenders = cmp.Or(c.TopOffenders, DefaultTopOffenders)
	c.ReadCount = cmp.Or(c.ReadCount, DefaultReadCount)
	c.ReadBlock = cmp.Or(c.ReadBlock, DefaultReadBlock)
	c.ReclaimIdle = cmp.Or(c.ReclaimIdle, DefaultReclaimIdle)
	c.SendRetries = cmp.Or(c.SendRetries, DefaultSendRetries)
	c.SendBackoff = cmp.Or(c.SendBackoff, DefaultSendBackoff)
	return c
}

// Deps are the injected collaborators. Zero values get a discarding logger,
// a fresh registry, the real clock and an HTTP client with a 10 s timeout.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	HTTPClient *http.Client
}

// Engine runs one tenant's threshold checks: it counts the tenant's
// buffered events, evaluates the rules in real time and on schedule, and
// sends alerts. Create it with New, run it with Run; Reload reloads the rules.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	rep   *logrepeat.Summarizer // the counting loop's and the checks' repeated errors
	clock clockwork.Clock
	m     *engineMetrics
	ev    *evaluator
	lease *lease.Lease  // nil on the embedded buffer: always the leader
	mem   *store.Memory // the store on the embedded buffer, else nil
	rcv   notify.Fanout

	// Outages (outage.go). On Redis: the copy of the active alerts, the
	// lease key, and whether this replica held the lease last (ledLast),
	// with its last fencing token.
	mirror     *mirrorStore
	fresh      *freshness
	leaseName  string
	ledLast    atomic.Bool
	lastToken  atomic.Int64
	fromMemory atomic.Bool // re-sending from the copy: logged once per outage

	// Rules and schedule (schedule.go). mu serializes Reload and guards
	// the rule files' signature at the last load attempt and the running
	// rule set's scheduler (nil while Run is not running).
	mu     sync.Mutex
	sig    string
	sched  gocron.Scheduler
	jobDef func(*rules.Rule) gocron.JobDefinition // jobDefinition; tests make scheduling fail with it
}

// New loads the rules (an invalid rule file is an error) and builds the
// engine, on the Redis buffer (cfg.Buffer) or on the embedded one
// (cfg.Local). It registers the engine's metrics on deps.Registerer,
// which is the tenant's: the caller adds the tenant label
// (metrics.Tenant).
func New(cfg Config, deps Deps) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Local == nil && cfg.Redis == nil {
		return nil, errors.New("thresholds: no redis client")
	}
	inject.Defaults(&deps.Logger, &deps.Registerer, &deps.Clock)
	if deps.HTTPClient == nil {
		deps.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	log := deps.Logger.With("component", "thresholds", "tenant", cfg.Tenant)
	m := newEngineMetrics(deps.Registerer)

	sig := cfg.rulesSignature()
	rs, err := cfg.loadRules()
	if err != nil {
		m.reloadOK.Set(0)
		return nil, fmt.Errorf("load threshold rules: %w", err)
	}
	m.reloadOK.Set(1)
	m.reloadTime.Set(float64(deps.Clock.Now().UnixNano()) / 1e9)
	for _, r := range rs.Rules {
		m.addRule(r.Name)
	}

	e := &Engine{cfg: cfg, log: log, rep: logrepeat.New(log, deps.Clock, 0), clock: deps.Clock, m: m, sig: sig, jobDef: jobDefinition}
	if cfg.AlertmanagerURL != "" {
		e.rcv = append(e.rcv, notify.NewAlertmanager(cfg.AlertmanagerURL, deps.HTTPClient, deps.Clock, log, m.Metrics, cfg.SendRetries, cfg.SendBackoff))
	}
	if cfg.WebhookURL != "" {
		e.rcv = append(e.rcv, notify.NewWebhook(cfg.WebhookURL, deps.HTTPClient, deps.Clock, log, m.Metrics, cfg.SendRetries, cfg.SendBackoff))
	}
	var st stateStore
	if cfg.Local != nil {
		e.mem = store.NewLocal(deps.Clock)
		st = e.mem
		checkRetention(cfg.Local, rs, log)
		// One process, alert state in memory: nothing survives a restart to
		// be resolved wrongly, so the counts start live.
		e.fresh = newFreshness(deps.Clock, log, m, cfg.ResolveHold, true)
	} else {
		e.leaseName = cfg.Buffer.Key("lease:thresholds")
		e.lease, err = lease.New(cfg.Redis, lease.Config{
			Name:     e.leaseName,
			Owner:    cfg.Consumer,
			TTL:      cfg.LeaseTTL,
			OnChange: e.leaderChanged,
		}, lease.Deps{Logger: deps.Logger, Clock: deps.Clock})
		if err != nil {
			return nil, err
		}
		e.mirror = newMirrorStore(store.NewRedis(cfg.Redis, cfg.Buffer.Key(""), cfg.Buffer.StreamKey(), cfg.Group))
		st = e.mirror
		// Alerts raised before this start are still active in Redis, and
		// the poller has yet to catch up on what happened meanwhile.
		e.fresh = newFreshness(deps.Clock, log, m, cfg.ResolveHold, false)
	}
	e.ev = &evaluator{
		tenant:    cfg.Tenant,
		st:        st,
		clock:     deps.Clock,
		log:       log,
		m:         m,
		out:       e.rcv,
		leader:    e.Leader,
		maxGroups: cfg.MaxGroups,
		maxAlerts: cfg.MaxAlertsPerRule,
		top:       cfg.TopOffenders,
		maxCand:   DefaultMaxCandidates,
		resend:    cfg.ResendInterval,
		realtime:  !cfg.DisableRealtime,
		live:      e.fresh.isLive,
		counted:   e.fresh.counted,
	}
	e.ev.rules.Store(rs)
	return e, nil
}

// Rules returns the rules in force.
func (e *Engine) Rules() *rules.Set { return e.ev.rules.Load() }

// Leader reports whether this replica holds the scheduler lease; always
// true on the embedded buffer.
func (e *Engine) Leader() bool { return e.lease == nil || e.lease.Held() }

// leaderChanged follows the lease. Losing it leaves the breach gauges and
// the copy of the alerts as they are: a lease that ran out because Redis
// does not answer is no news about the breaches, and nobody else can have
// checked meanwhile. They are handed over (stepDown) only once Redis shows
// that another replica took the lease.
func (e *Engine) leaderChanged(held bool, token int64) {
	if held {
		e.lastToken.Store(token)
		e.ledLast.Store(true)
		e.m.leader.Set(1)
		return
	}
	e.m.leader.Set(0)
}

// Run counts, evaluates and alerts until ctx ends. On the embedded buffer
// it first rebuilds the counts from the buffer (see the package doc), then
// starts the checks. It returns nil after an orderly stop: the scheduler
// stopped, the lease released, queued alerts given a last attempt.
func (e *Engine) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}

	leaseDone := make(chan struct{})
	if e.lease == nil {
		// One process: always the leader. Count what the buffer retains
		// first, so the first checks see the counts of before the restart.
		close(leaseDone)
		e.leaderChanged(true, 0)
		if !e.rebuildUntilDone(runCtx) {
			return nil
		}
	} else {
		// Try the lease once up front, so the first checks run right away here.
		if _, err := e.lease.Acquire(runCtx); err != nil {
			e.log.Warn("acquire lease", "err", err)
		}
		go func() { _ = e.lease.Run(runCtx); close(leaseDone) }()
	}

	e.mu.Lock()
	sched, err := e.schedule(e.ev.rules.Load())
	if err == nil {
		e.sched = sched
		sched.Start()
	}
	e.mu.Unlock()
	if err != nil {
		cancel()
		<-leaseDone
		return err
	}

	for _, r := range e.rcv {
		goRun(func() { r.Run(runCtx, 5*time.Second) })
	}
	goRun(func() { e.consume(runCtx) })
	goRun(func() { e.keepAlerts(runCtx) })
	if e.cfg.ReloadInterval > 0 && e.cfg.Rules == nil {
		goRun(func() { e.watch(runCtx) })
	}

	<-ctx.Done()
	e.mu.Lock()
	sched, e.sched = e.sched, nil // the last reload's
	e.mu.Unlock()
	if err := sched.Shutdown(); err != nil {
		e.log.Warn("stop scheduler", "err", err)
	}
	cancel()
	wg.Wait()
	<-leaseDone
	return nil
}

// readGauge returns a gauge's current value.
func readGauge(g prometheus.Gauge) float64 {
	var d dto.Metric
	if err := g.Write(&d); err != nil || d.Gauge == nil {
		return 0
	}
	return d.Gauge.GetValue()
}
