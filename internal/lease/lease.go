// Package lease is a Redis lease: at most one holder at a time, with a
// fencing token, for work that exactly one replica may do (the threshold
// scheduler, the Auth0 poller of a tenant).
//
// Guarantee:
//
//   - Mutual exclusion. The lease is one Redis key set with SET NX PX; only
//     the holder renews it (a Lua compare-and-renew on the holder's value)
//     or deletes it (compare-and-delete), so a holder whose lease expired and
//     was taken by another can neither extend nor remove the new holder's.
//   - Fencing. Every acquisition increments a counter (INCR) in the same
//     script and stores it in the lease's value: tokens grow strictly from one
//     holder to the next, so a store that remembers the highest token it has
//     seen can refuse a write from a holder that lost the lease (Token).
//   - Tokens never go backwards, even when Redis loses the counter (a
//     restart without persistence, a promoted replica that had not synced,
//     eviction). Each acquisition passes the highest token this process has
//     held; a counter found below it is set to it before the increment, so a
//     holder that lost its lease to such a loss can never meet its own token
//     again. The acquisition then logs the regression and calls
//     Config.OnRegress, which lets the buffer count it as lost data.
//   - A lost lease stops work within one lease period. Held reports true only
//     until TTL after the start of the last successful acquire or renew,
//     measured on the injected clock (minus a small drift margin), whether or
//     not Redis can be reached; the keeper (Run) renews every TTL/3 and, the
//     moment it finds the lease gone or its validity over, cancels the context
//     handed out by Wait and calls OnChange(false). A holder that cannot
//     reach Redis therefore stops before the key expires and another replica
//     can take it.
//   - Graceful hand-over. When Run's context ends the keeper releases the
//     lease (compare-and-delete), so another replica acquires it at its next
//     attempt instead of waiting for the TTL.
//
// Every loss is logged with what happened (a Loss: taken over by another
// replica, expired in Redis, not renewed because Redis was unreachable or
// too slow, released at shutdown) and LostBecause tells OnChange callers;
// failed renewals are logged once, summarised while they repeat, and
// followed by one line when Redis answers again.
//
// Keys. The lease is the key Config.Name; the fencing counter is Name+":fence"
// when Name carries a hash tag ("authpipe:{tenant}:lease:thresholds"), else
// "{Name}:fence": both always hash to one slot, so the scripts also work on
// Redis Cluster.
package lease

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/logrepeat"
)

// DefaultTTL is the lease period when Config.TTL is zero.
const DefaultTTL = 15 * time.Second

// MinTTL is the shortest lease period accepted.
const MinTTL = 50 * time.Millisecond

// ErrNotHeld is returned by IsLeader when this process does not hold the lease.
var ErrNotHeld = errors.New("lease not held")

// Loss says why a hold ended: what an operator reads in the log and what
// OnChange(false) callers may tell apart with LostBecause.
type Loss string

const (
	// LossTakenOver: at renewal another replica held the key. Ours had
	// expired first (renewals failed or came too late), so the other one
	// acquired it: a fail-over.
	LossTakenOver Loss = "taken over by another replica"
	// LossExpired: at renewal the key was gone: it expired before the
	// renewal reached Redis, or Redis lost it (restart without
	// persistence, eviction, flush).
	LossExpired Loss = "expired in Redis before renewal"
	// LossUnreachable: no renewal succeeded within the lease period,
	// because Redis could not be reached (or answered too slowly): the
	// hold ended locally, before the key expires in Redis.
	LossUnreachable Loss = "not renewed in time: Redis unreachable"
	// LossLate: no renewal succeeded within the lease period although
	// none failed: this process was stalled (a pause, CPU starvation) or
	// Redis answered too late.
	LossLate Loss = "not renewed in time"
	// LossReleased: Release gave the lease up (Run's context ended: the
	// process is stopping).
	LossReleased Loss = "released"
)

// Config configures one lease.
type Config struct {
	// Name is the Redis key of the lease. Give it the hash tag of the keys
	// the holder works on, e.g. "authpipe:{tenant}:lease:thresholds".
	Name string
	// Owner identifies this holder; it must be unique among the processes
	// competing for the lease. Default: hostname-pid-random.
	Owner string
	// TTL is the lease period: how long a holder that stopped renewing keeps
	// the lease. Default DefaultTTL.
	TTL time.Duration
	// RenewEvery is how often the keeper renews, or retries to acquire.
	// Default TTL/3; it must be less than TTL.
	RenewEvery time.Duration
	// OnChange, if set, is called by the goroutine that saw the change each
	// time the lease is gained (held true, with its fencing token) or lost.
	// It must not block.
	OnChange func(held bool, token int64)
	// OnRegress, if set, is called when an acquisition found the fencing
	// counter below the highest token this process held (found < held):
	// Redis lost it. Tokens continue above held. It must not block.
	OnRegress func(found, held int64)
}

// Validate checks the configuration; zero TTL, RenewEvery and Owner mean
// their defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("lease name: empty"))
	}
	if c.TTL != 0 && c.TTL < MinTTL {
		errs = append(errs, fmt.Errorf("lease ttl %s: want at least %s", c.TTL, MinTTL))
	}
	if c.RenewEvery < 0 {
		errs = append(errs, fmt.Errorf("lease renew interval %s: want more than 0", c.RenewEvery))
	}
	ttl := cmp.Or(c.TTL, DefaultTTL)
	if c.RenewEvery >= ttl {
		errs = append(errs, fmt.Errorf("lease renew interval %s: want less than the ttl %s", c.RenewEvery, ttl))
	}
	if strings.ContainsAny(c.Owner, "\r\n") {
		errs = append(errs, errors.New("lease owner: contains a line break"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.TTL = cmp.Or(c.TTL, DefaultTTL)
	c.RenewEvery = cmp.Or(c.RenewEvery, c.TTL/3)
	if c.Owner == "" {
		c.Owner = DefaultOwner()
	}
	return c
}

// DefaultOwner returns hostname-pid-random: unique per process.
func DefaultOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "authpipe"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// Deps are the injected collaborators; zero values get a discarding logger
// and the real clock.
type Deps struct {
	Logger *slog.Logger
	Clock  clockwork.Clock
}

// Lease is one process's handle on a Redis lease. It is safe for concurrent use.
type Lease struct {
	client redis.UniversalClient
	cfg    Config
	log    *slog.Logger
	clock  clockwork.Clock
	key    string
	fence  string
	margin time.Duration

	mu         sync.Mutex
	held       bool
	token      int64
	highest    int64  // the highest token this process has held: the counter's floor
	value      string // token:owner, what the key holds while we hold it
	validUntil time.Time
	holdCancel context.CancelFunc
	holdCtx    context.Context
	changed    chan struct{} // closed and replaced on every gain or loss
	lost       Loss          // why the last hold ended
	holder     string        // the owner that took the lease over, for LossTakenOver

	rep *logrepeat.Summarizer // the keeper's failed renewals and acquisitions
}

// New returns a lease handle. It does not talk to Redis.
func New(client redis.UniversalClient, cfg Config, deps Deps) (*Lease, error) {
	if client == nil {
		return nil, errors.New("lease: nil redis client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	inject.Defaults(&deps.Logger, nil, &deps.Clock)
	log := deps.Logger.With("component", "lease", "lease", cfg.Name)
	return &Lease{
		client:  client,
		cfg:     cfg,
		log:     log,
		rep:     logrepeat.New(log, deps.Clock, 0),
		clock:   deps.Clock,
		key:     cfg.Name,
		fence:   FenceKey(cfg.Name),
		margin:  cfg.TTL/100 + 2*time.Millisecond,
		changed: make(chan struct{}),
	}, nil
}

// FenceKey returns the key of the fencing counter of the lease key name: in
// the same hash slot as name.
func FenceKey(name string) string {
	if i := strings.IndexByte(name, '{'); i >= 0 && strings.IndexByte(name[i+1:], '}') > 0 {
		return name + ":fence"
	}
	return "{" + name + "}:fence"
}

// acquireScript: SET NX PX, and on success INCR the fence and store
// "token:owner" as the value. A fence below the floor (the highest token
// the caller has held: Redis lost the counter) is raised to it first.
// KEYS: lease, fence. ARGV: owner, ttl ms, floor.
// Returns {token, the fence as found}, or nil when the lease is held by
// someone.
var acquireScript = redis.NewScript(`#!lua
if not redis.call('SET', KEYS[1], 'acquiring', 'NX', 'PX', ARGV[2]) then
  return false
end
local found = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local floor = tonumber(ARGV[3])
if found < floor then redis.call('SET', KEYS[2], floor) end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], tok .. ':' .. ARGV[1], 'PX', ARGV[2])
return {tok, found}
`)

// renewScript: compare-and-renew. KEYS: lease. ARGV: value, ttl ms.
var renewScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript: compare-and-delete. KEYS: lease. ARGV: value.
var releaseScript = redis.NewScript(`#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Acquire tries once to take the lease. It reports whether this process
// holds it afterwards; if it already held it, Acquire renews it.
func (l *Lease) Acquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	already, floor := l.held, l.highest
	l.mu.Unlock()
	if already {
		return l.Renew(ctx)
	}
	start := l.clock.Now()
	res, err := acquireScript.Run(ctx, l.client, []string{l.key, l.fence},
		l.cfg.Owner, l.cfg.TTL.Milliseconds(), floor).Int64Slice()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	if len(res) != 2 {
		return false, fmt.Errorf("acquire lease %s: unexpected script reply %v", l.key, res)
	}
	tok, found := res[0], res[1]
	if found < floor {
		l.log.Warn("lease fencing counter went backwards: Redis lost it; tokens continue above the highest one held",
			"found", found, "held", floor, "token", tok)
		if l.cfg.OnRegress != nil {
			l.cfg.OnRegress(found, floor)
		}
	}
	l.gain(tok, start)
	return true, nil
}

// Renew extends the lease by TTL if this process still holds it. false
// means the lease was lost (expired, taken over, or never held); Held is
// false from then on.
func (l *Lease) Renew(ctx context.Context) (bool, error) {
	l.mu.Lock()
	held, value := l.held, l.value
	l.mu.Unlock()
	if !held {
		return false, nil
	}
	start := l.clock.Now()
	n, err := renewScript.Run(ctx, l.client, []string{l.key}, value, l.cfg.TTL.Milliseconds()).Int64()
	if err != nil {
		// Still held until its validity runs out; the caller retries.
		return l.Held(), fmt.Errorf("renew lease %s: %w", l.key, err)
	}
	if n != 1 {
		// Who holds it now, for the log line only: the key may change
		// again at any moment, which makes this an observation, not state.
		why, holder := LossExpired, ""
		if v, err := l.client.Get(ctx, l.key).Result(); err == nil {
			why, holder = LossTakenOver, ownerOf(v)
		}
		l.loseBecause(value, why, holder)
		return false, nil
	}
	l.mu.Lock()
	if l.held && l.value == value {
		l.validUntil = start.Add(l.cfg.TTL - l.margin)
	}
	l.mu.Unlock()
	return true, nil
}

// Release gives the lease up if this process holds it (compare-and-delete).
// The local hold ends even if Redis cannot be reached; the key then expires
// after TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	held, value := l.held, l.value
	l.mu.Unlock()
	if !held {
		return nil
	}
	l.lose(value, LossReleased)
	if err := releaseScript.Run(ctx, l.client, []string{l.key}, value).Err(); err != nil {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return nil
}

// Held reports whether this process holds the lease now: it acquired or
// renewed it less than TTL (minus a drift margin) ago and has not seen it
// lost.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && l.clock.Now().Before(l.validUntil)
}

// Token returns the fencing token of the current hold, 0 when not held.
func (l *Lease) Token() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held || !l.clock.Now().Before(l.validUntil) {
		return 0
	}
	return l.token
}

// Elector is the adapter that gocron's WithDistributedElector takes: only the
// holder of the lease runs jobs. gocron asks before every run, so a replica
// that lost the lease runs no job after Held turned false.
type Elector struct{ lease *Lease }

var _ gocron.Elector = Elector{}

// Elector returns the gocron elector backed by this lease.
func (l *Lease) Elector() Elector { return Elector{lease: l} }

// IsLeader returns nil while the lease is held, else ErrNotHeld.
func (e Elector) IsLeader(context.Context) error {
	if e.lease.Held() {
		return nil
	}
	return ErrNotHeld
}

// Wait blocks until this process holds the lease (the keeper, Run, must be
// running) and returns a context that is cancelled as soon as the lease is
// lost, or ctx ends. Run work under it to stop within one lease period of
// losing the lease.
func (l *Lease) Wait(ctx context.Context) (context.Context, error) {
	for {
		l.mu.Lock()
		held := l.held && l.clock.Now().Before(l.validUntil)
		holdCtx, changed := l.holdCtx, l.changed
		l.mu.Unlock()
		if held {
			wctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(holdCtx, cancel)
			context.AfterFunc(wctx, func() { stop(); cancel() })
			return wctx, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// Run keeps the lease until ctx ends: it acquires when free, renews every
// RenewEvery while held, notices a loss (taken over, or validity over while
// Redis is unreachable) and releases the lease when ctx ends. It returns
// nil after releasing.
func (l *Lease) Run(ctx context.Context) error {
	for {
		if l.Held() {
			if _, err := l.Renew(ctx); err != nil && ctx.Err() == nil {
				l.rep.Fail(ctx, "renew lease", slog.LevelWarn, "renew lease", err, "valid_for", l.validFor().String())
			} else if err == nil {
				l.reachable(ctx)
			}
		} else {
			l.expire() // a hold whose validity ran out is lost
			if _, err := l.Acquire(ctx); err != nil && ctx.Err() == nil {
				l.rep.Fail(ctx, "acquire lease", slog.LevelWarn, "acquire lease", err)
			} else if err == nil {
				l.reachable(ctx)
			}
		}
		wait := l.cfg.RenewEvery
		l.mu.Lock()
		if l.held {
			if left := l.validUntil.Sub(l.clock.Now()); left < wait {
				wait = max(left, 0)
			}
		}
		l.mu.Unlock()
		timer := l.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			err := l.Release(rctx)
			cancel()
			if err != nil {
				l.log.Warn("release lease", "err", err)
			}
			return nil
		case <-timer.Chan():
		}
	}
}

// expire ends a local hold whose validity has run out.
func (l *Lease) expire() {
	l.mu.Lock()
	held, value, over := l.held, l.value, !l.clock.Now().Before(l.validUntil)
	l.mu.Unlock()
	if held && over {
		why := LossLate
		if l.rep.Failing("renew lease") {
			why = LossUnreachable
		}
		l.lose(value, why)
	}
}

// reachable ends the keeper's episodes of failed renewals and acquisitions
// with one line: Redis answered again.
func (l *Lease) reachable(ctx context.Context) {
	var failures int
	var longest time.Duration
	for _, key := range []string{"renew lease", "acquire lease"} {
		if ep, ok := l.rep.Clear(key); ok {
			failures += ep.Failures
			longest = max(longest, ep.Duration)
		}
	}
	if failures > 0 {
		l.log.InfoContext(ctx, "lease keeper reaches Redis again", "held", l.Held(),
			"failures", failures, "failing_for", longest.Round(time.Second).String())
	}
}

// validFor is how long the current hold stays valid without a renewal.
func (l *Lease) validFor() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held {
		return 0
	}
	return max(l.validUntil.Sub(l.clock.Now()), 0).Round(time.Millisecond)
}

// LostBecause says why the last hold ended (empty if none has), and for
// LossTakenOver the owner that holds the lease now, as far as Redis said at
// the time. Call it from OnChange(false) to say what happened.
func (l *Lease) LostBecause() (why Loss, holder string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost, l.holder
}

// ownerOf returns the owner part of a lease value "token:owner".
func ownerOf(value string) string {
	if _, owner, ok := strings.Cut(value, ":"); ok {
		return owner
	}
	return value
}

func (l *Lease) gain(token int64, start time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	l.held = true
	l.token = token
	l.highest = max(l.highest, token)
	l.value = strconv.FormatInt(token, 10) + ":" + l.cfg.Owner
	l.validUntil = start.Add(l.cfg.TTL - l.margin)
	l.holdCtx, l.holdCancel = ctx, cancel
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	l.log.Info("lease acquired", "token", token)
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(true, token)
	}
}

// lose ends the hold whose value is value (a newer hold is left alone).
func (l *Lease) lose(value string, why Loss) { l.loseBecause(value, why, "") }

func (l *Lease) loseBecause(value string, why Loss, holder string) {
	l.mu.Lock()
	if !l.held || l.value != value {
		l.mu.Unlock()
		return
	}
	token := l.token
	l.held = false
	l.token = 0
	l.value = ""
	l.lost, l.holder = why, holder
	if l.holdCancel != nil {
		l.holdCancel()
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	switch why {
	case LossReleased:
		l.log.Info("lease released", "token", token)
	case LossTakenOver:
		l.log.Warn("lease lost: taken over by another replica (ours expired before it was renewed)", "token", token, "holder", holder)
	case LossExpired:
		l.log.Warn("lease lost: its key expired or vanished from Redis before renewal", "token", token, "ttl", l.cfg.TTL.String())
	case LossUnreachable:
		l.log.Warn("lease lost: not renewed within its period because Redis was unreachable", "token", token, "ttl", l.cfg.TTL.String())
	default:
		l.log.Warn("lease lost: not renewed within its period (this process or Redis was too slow)", "token", token, "ttl", l.cfg.TTL.String())
	}
	if l.cfg.OnChange != nil {
		l.cfg.OnChange(false, token)
	}
}
