package auth0poll

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auth0/go-auth0/management"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/buffer"
	"github.com/authpipe/authpipe/internal/config"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/logrepeat"
	"github.com/authpipe/authpipe/internal/metrics"
)

const (
	// minBackoff is the first wait after an error (before jitter).
	minBackoff = time.Second
	// gapSlack is the resolution of retention-gap detection. The first
	// start's checkpoint lies at now − Retention truncated to the second,
	// and an event's log_id time is a few seconds after its date: a position
	// that is behind the retention horizon by less than this is not a gap.
	gapSlack = time.Minute
	// maxErrLen bounds error text in logs: a token endpoint's error carries
	// its whole response body.
	maxErrLen = 512
)

// Buffer is what the poller needs from the buffer. *buffer.Redis satisfies it.
type Buffer interface {
	// Checkpoint returns the stored checkpoint, "" when there is none yet.
	Checkpoint(ctx context.Context) (string, error)
	// Append stores logs and sets the checkpoint in one atomic step.
	Append(ctx context.Context, logs []auth0log.Log, checkpoint string) (int, error)
	// Full reports back-pressure: polling pauses while it is true.
	Full(ctx context.Context) (bool, error)
}

// Recovering is implemented by a buffer that detects its own lost data
// (*buffer.Redis, *buffer.Bolt). The poller then asks it where to continue
// — at start, and whenever its loss generation changes — instead of
// reading the checkpoint: after lost data that is the point up to which
// every event was known delivered, so the lost window is polled again.
type Recovering interface {
	// Resume returns where to poll from; since is the Generation of the
	// last Position taken (0 at first).
	Resume(ctx context.Context, since uint64) (buffer.Position, error)
	// LossGeneration changes each time the buffer finds it lost data.
	LossGeneration() uint64
}

// Deps are the injected collaborators of a Poller. Zero values get defaults:
// a discarding logger, a fresh registry, the real clock, and stage counters
// registered nowhere.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Clock      clockwork.Clock
	Stages     *metrics.Stages
	// Stream, when set, is the tenant's Auth0 Log Stream: the poller slows
	// to Config.StreamPollInterval while it is healthy and tells it the
	// logs it found first.
	Stream Stream
}

// Poller polls one tenant's Auth0 logs into a Buffer. See the package doc
// for its guarantee.
type Poller struct {
	cfg      Config
	base     string // "scheme://host"
	insecure bool
	buf      Buffer
	rec      Recovering // buf, when it detects its own lost data; else nil
	log      *slog.Logger
	rep      *logrepeat.Summarizer // failed attempts, by action
	clock    clockwork.Clock
	m        *pollMetrics
	rl       *rateLimit
	stream   Stream // the tenant's Log Stream; nil when it is off
	seer     Seer   // buf's dedupe read, when it has one

	apiClient   *http.Client // given to go-auth0 for logs requests
	tokenClient *http.Client // used by oauth2 for token requests

	running     atomic.Bool
	ready       atomic.Bool
	lastSuccess atomic.Int64 // UnixNano of the last good page, 0 = never

	mu       sync.Mutex // guards the position, read by the lag gauge
	cpTime   time.Time  // time embedded in the checkpoint; zero until read
	caughtUp time.Time  // start of the last poll that returned a short page

	// Loop state, owned by Run's goroutine.
	api     *management.Management
	cp      string
	bo      backoff
	inGap   bool
	gapFrom time.Time
	paused  bool
	limited int       // 429s in a row
	pre     *prefetch // the page after the one being appended, asked for early
	// idleFrom is the start of a poll that found Auth0 caught up (zero
	// otherwise): the next poll is due an idle interval after it.
	idleFrom time.Time
	interval time.Duration // the idle interval last in force
	// idleLongest is the longest interval in force during the last idle
	// wait: a lag up to three of it is that wait, not falling behind.
	idleLongest time.Duration
	// repollUntil: logs up to this log_id are polled again after the
	// buffer lost them, and are not counted as the stream's misses.
	repollUntil string
	prog        progress // catch-up state, for the progress lines
	gen         uint64   // the buffer's loss generation of the position polled from
}

// New validates cfg, applies its defaults and builds a Poller. It makes no
// network calls: the first token and logs requests happen in Run.
func New(cfg Config, buf Buffer, deps Deps) (*Poller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("auth0poll config: %w", err)
	}
	if buf == nil {
		return nil, errors.New("auth0poll: nil buffer")
	}
	cfg = cfg.withDefaults()
	base, insecure, err := parseDomain(cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("auth0poll config: %w", err)
	}
	inject.Defaults(&deps.Logger, &deps.Registerer, &deps.Clock)
	rec, _ := buf.(Recovering)
	seer, _ := buf.(Seer)
	p := &Poller{
		rec:      rec,
		stream:   deps.Stream,
		seer:     seer,
		cfg:      cfg,
		base:     base,
		insecure: insecure,
		buf:      buf,
		log:      deps.Logger.With("component", "auth0poll", "tenant", cfg.Tenant),
		clock:    deps.Clock,
		rl:       newRateLimit(cfg.RateLimitShare, cfg.MaxBackoff),
		bo:       backoff{base: minBackoff, max: cfg.MaxBackoff},
	}
	p.rep = logrepeat.New(p.log, p.clock, 0)
	p.m, err = newPollMetrics(deps.Registerer, deps.Stages, cfg, p.lagSeconds)
	if err != nil {
		return nil, err
	}
	p.apiClient = &http.Client{
		Timeout: cfg.RequestTimeout,
		Transport: &transport{
			base:      cloneDefaultTransport(),
			clock:     p.clock,
			rl:        p.rl,
			requests:  p.m.requests,
			remaining: p.m.remaining,
			refill:    p.m.refill,
		},
	}
	p.tokenClient = &http.Client{Timeout: cfg.RequestTimeout, Transport: cloneDefaultTransport()}
	if _, err := p.newAPI(context.Background()); err != nil {
		return nil, fmt.Errorf("auth0poll: build management client: %w", err)
	}
	return p, nil
}

func cloneDefaultTransport() http.RoundTripper {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return http.DefaultTransport
}

// newAPI builds the go-auth0 management client. Tokens are fetched lazily,
// on the first request (management.New makes no network call), with ctx —
// go-auth0 keeps the ctx given to WithClientCredentials for every token
// refresh, so the token HTTP client (with its timeout) travels in it, and
// cancelling Run's context aborts a token request in flight.
func (p *Poller) newAPI(ctx context.Context) (*management.Management, error) {
	tokenCtx := context.WithValue(ctx, oauth2.HTTPClient, p.tokenClient)
	var opts []management.Option
	if p.insecure {
		// Must come before WithClientCredentials: it switches the URL to
		// http, which the token URL and audience are built from, and it
		// installs a static "insecure" token that WithClientCredentials
		// then replaces. The reverse order sends "Bearer insecure".
		opts = append(opts, management.WithInsecure())
	}
	opts = append(opts,
		management.WithClientCredentials(tokenCtx, p.cfg.ClientID, p.cfg.ClientSecret.Reveal()),
		management.WithNoRetries(),
		management.WithClient(p.apiClient),
	)
	return management.New(p.base, opts...)
}

// Ready reports whether Auth0 has answered a logs request with a page that
// decoded, at least once.
func (p *Poller) Ready() bool { return p.ready.Load() }

// Run polls until ctx is cancelled, then returns nil. Errors of Auth0 or
// the buffer never end it: they are retried. It returns an error only when
// it cannot start safely (a stored checkpoint that is not a log_id) or when
// called while already running.
func (p *Poller) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("auth0poll: Run is already running")
	}
	defer p.running.Store(false)

	if err := p.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		p.idleFrom = time.Time{}
		wait := p.step(ctx)
		if !p.idleFrom.IsZero() {
			if !p.sleepIdle(ctx, p.idleFrom) {
				break
			}
			continue
		}
		if !p.sleep(ctx, wait) {
			break
		}
	}
	p.dropPrefetch()
	p.log.Info("auth0 poller stopped", "checkpoint", p.cp)
	return nil
}

// start reads the checkpoint (retrying while the buffer fails) and builds
// the management client.
func (p *Poller) start(ctx context.Context) error {
	var (
		cp     string
		repoll *buffer.Incident
	)
	for {
		var err error
		cp, repoll, err = p.locate(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !p.sleep(ctx, p.failed(ctx, reasonBuffer, actReadCheckpoint, err)) {
			return ctx.Err()
		}
	}
	p.recovered(ctx, actReadCheckpoint)
	p.bo.reset()
	if err := p.moveTo(cp, repoll); err != nil {
		return err
	}
	api, err := p.newAPI(ctx)
	if err != nil {
		return fmt.Errorf("auth0poll: build management client: %w", err)
	}
	p.api = api
	return nil
}

// locate asks the buffer where to poll from: the stored checkpoint, or
// after lost data the re-poll point (repoll not nil). "" means nothing is
// known: the start of Auth0's retention.
func (p *Poller) locate(ctx context.Context) (string, *buffer.Incident, error) {
	if p.rec == nil {
		cp, err := p.buf.Checkpoint(ctx)
		return cp, nil, err
	}
	pos, err := p.rec.Resume(ctx, p.gen)
	if err != nil {
		return "", nil, err
	}
	p.gen = pos.Generation
	return pos.From, pos.Repoll, nil
}

// moveTo makes cp (see locate) the position polled from.
func (p *Poller) moveTo(cp string, repoll *buffer.Incident) error {
	if cp == "" {
		since := p.clock.Now().Add(-p.cfg.Retention)
		cp = auth0log.CheckpointAt(since)
		p.startProgress(since)
		if repoll != nil {
			// Nothing known: whatever Auth0 holds up to now was stored before.
			p.repollUntil = max(p.repollUntil, repoll.RepollUntil, auth0log.CheckpointAt(p.clock.Now()))
			p.log.Warn("the buffer lost data and nothing was known delivered: polling Auth0's whole retention window again",
				"since", since.UTC(), "retention", p.cfg.Retention.String(), "incident", repoll.Number)
		} else {
			p.log.Info("no checkpoint stored; backfilling Auth0's retention window",
				"since", since.UTC(), "retention", p.cfg.Retention.String())
		}
	} else {
		p.startProgress(time.Time{})
		if err := auth0log.ValidateID(cp); err != nil {
			return fmt.Errorf("auth0poll: stored checkpoint: %w", err)
		}
		if repoll != nil {
			// Pushed logs after the checkpoint went with the dedupe record
			// too: nothing up to now counts as the stream's miss.
			p.repollUntil = max(p.repollUntil, repoll.RepollUntil, auth0log.CheckpointAt(p.clock.Now()))
			p.log.Warn("the buffer lost data: polling Auth0 again from the last point known delivered",
				"from", cp, "until", repoll.RepollUntil, "incident", repoll.Number)
		} else {
			p.log.Info("resuming from stored checkpoint", "checkpoint", cp)
		}
	}
	if err := p.setCheckpoint(cp); err != nil {
		return fmt.Errorf("auth0poll: checkpoint: %w", err)
	}
	// Whatever was polled up to before is not known buffered any more.
	p.setCaughtUp(time.Time{})
	return nil
}

// step makes one attempt at the page after the checkpoint and returns how
// long to wait before the next attempt.
func (p *Poller) step(ctx context.Context) time.Duration {
	if p.rec != nil && p.rec.LossGeneration() != p.gen {
		// The buffer lost data: continue where it says, dropping a page
		// asked for from the old position.
		p.dropPrefetch()
		cp, repoll, err := p.locate(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			return p.failed(ctx, reasonBuffer, actResume, err)
		}
		if err := p.moveTo(cp, repoll); err != nil {
			return p.failed(ctx, reasonBuffer, actResume, err)
		}
		p.recovered(ctx, actResume)
		p.bo.reset()
	}
	// Before anything that can fail or pause: logs age out of Auth0 while
	// the buffer is full or Auth0 fails, and the gap is reported when it
	// begins.
	p.checkGap()
	p.checkBehind()
	full, err := p.buf.Full(ctx)
	if err != nil {
		p.dropPrefetch()
		if ctx.Err() != nil {
			return 0
		}
		return p.failed(ctx, reasonBuffer, actCheckFill, err)
	}
	p.recovered(ctx, actCheckFill)
	p.setPaused(full)
	if full {
		p.dropPrefetch()
		return p.cfg.PollInterval
	}

	var (
		start time.Time
		logs  []auth0log.Log
	)
	if pre := p.takePrefetch(); pre != nil {
		// Asked for during the last append, paced then.
		start, logs, err = pre.sent, pre.logs, pre.err
	} else {
		if d := p.rl.wait(p.clock.Now()); d > 0 {
			return d
		}
		if p.api == nil {
			if p.api, err = p.newAPI(ctx); err != nil {
				return p.failed(ctx, reasonHTTP, actBuildClient, err)
			}
		}
		start = p.clock.Now()
		logs, err = fetchPage(ctx, p.api, p.cp, p.cfg.PageSize)
	}
	var bad *auth0log.EventError
	if errors.As(err, &bad) {
		p.m.stage.Failed.Add(float64(bad.Events))
		return p.failed(ctx, reasonDecode, actDecode, err,
			"event_index", bad.Index, "events_in_page", bad.Events, "after_log_id", max(p.cp, bad.After))
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		return p.fetchFailed(ctx, err)
	}
	last := p.cp
	for _, l := range logs {
		last = max(last, l.ID)
	}
	p.limited = 0
	p.recovered(ctx, actBuildClient, actToken, actFetch, actDecode)
	p.markSuccess()
	p.m.stage.Received.Add(float64(len(logs)))

	if len(logs) > 0 {
		// Only while nothing fails: a page refused again and again
		// costs one request per attempt, not two.
		if len(logs) >= p.cfg.PageSize && p.bo.attempt == 0 && p.rl.wait(p.clock.Now()) <= 0 {
			p.startPrefetch(ctx, last)
		}
		first := p.unseen(ctx, logs)
		added, err := p.buf.Append(ctx, logs, last)
		if err != nil {
			p.dropPrefetch()
			if ctx.Err() != nil {
				return 0
			}
			if p.rec != nil && p.rec.LossGeneration() != p.gen {
				return 0 // the buffer lost data: the next step resumes where it says
			}
			p.m.stage.Failed.Add(float64(len(logs)))
			return p.failed(ctx, reasonBuffer, actAppend, err, "events_in_page", len(logs))
		}
		p.recovered(ctx, actAppend)
		p.noteAppended(len(logs), added)
		p.m.added.Add(float64(added))
		if len(first) > 0 {
			p.stream.PolledFirst(first, p.clock.Now())
		}
		n := float64(len(logs))
		p.m.stage.Written.Add(n)
		p.m.stage.Acked.Add(n)
		p.m.polled.Add(n)
		p.m.countOutcomes(logs)
		if err := p.setCheckpoint(last); err != nil {
			// Decode validated every log_id: unreachable.
			return p.failed(ctx, reasonDecode, "advance checkpoint", err)
		}
	}
	p.bo.reset()
	if p.inGap {
		resumed := start.Add(-p.cfg.Retention)
		if len(logs) > 0 {
			resumed = logs[0].Date
		}
		p.log.Error("auth0 polling resumed after a retention gap; logs in between are lost",
			"lost_from", p.gapFrom.UTC(), "resumed_at", resumed.UTC())
		p.inGap = false
	}
	if len(logs) >= p.cfg.PageSize {
		// A full page: more are waiting, to be fetched as soon as the
		// rate-limit pacing allows.
		return p.rl.wait(p.clock.Now())
	}
	p.setCaughtUp(start)
	p.reachedHead(start)
	p.idleFrom = start
	return p.idleInterval(p.clock.Now())
}

// fetchFailed classifies a failed logs request and returns the wait before
// the same page is asked for again.
func (p *Poller) fetchFailed(ctx context.Context, err error) time.Duration {
	var apiErr management.Error
	switch {
	case isTokenError(err):
		return p.failed(ctx, reasonToken, actToken, err)
	case errors.As(err, &apiErr) && apiErr.Status() == http.StatusTooManyRequests:
		// Wait for the reset the response named. Should 429s persist
		// anyway (a bucket shared with other clients, clock skew), back
		// off further rather than ask again every reset.
		p.limited++
		d := p.rl.after429(p.clock.Now())
		if p.limited > 1 {
			d = max(d, p.bo.next())
		}
		p.log.Info("auth0 rate limit reached; waiting for reset", "from", p.cp, "wait", d.String(), "in_a_row", p.limited)
		return d
	case errors.As(err, &apiErr):
		if apiErr.Status() == http.StatusUnauthorized {
			// The cached token may have been revoked or expired early:
			// a new client fetches a new one.
			p.api = nil
		}
		return p.failed(ctx, reasonHTTP, actFetch, err, "status", apiErr.Status())
	case errors.As(err, new(*pageDecodeError)):
		return p.failed(ctx, reasonDecode, actDecode, err)
	default:
		return p.failed(ctx, reasonHTTP, actFetch, err)
	}
}

// isTokenError reports whether err came from the token endpoint: an error
// answer (*oauth2.RetrieveError) or no answer at all (a *url.Error for the
// token URL, nested inside the one for the logs URL).
func isTokenError(err error) bool {
	var rErr *oauth2.RetrieveError
	if errors.As(err, &rErr) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ue, ok := e.(*url.Error); ok && strings.HasSuffix(ue.URL, "/oauth/token") {
			return true
		}
	}
	return false
}

// failed counts and logs a failed attempt and returns the backoff before
// the next one. The page is never skipped: the next attempt asks for the
// same checkpoint.
func (p *Poller) failed(ctx context.Context, reason, action string, err error, attrs ...any) time.Duration {
	p.m.pageErrors[reason].Inc()
	d := p.bo.next()
	level := slog.LevelWarn
	var rErr *oauth2.RetrieveError
	if reason == reasonDecode || (errors.As(err, &rErr) && rErr.Response != nil &&
		rErr.Response.StatusCode >= 400 && rErr.Response.StatusCode < 500) {
		// A page Auth0 keeps serving broken, or credentials it refuses:
		// retrying alone will not fix either.
		level = slog.LevelError
	}
	args := append([]any{
		"reason", reason, "action", action, "from", p.cp,
		"attempt", p.bo.attempt, "retry_in", d.String(),
	}, attrs...)
	// An outage of Auth0 or the buffer: its first attempt in full, then a
	// summary a minute, then one line when the action succeeds again.
	p.rep.Fail(ctx, action, level, "auth0 poll attempt failed; retrying the same page", errors.New(p.redact(err)), args...)
	return d
}

// Actions of the poll loop, as failed logs them (the action attribute) and
// as the summarised episodes of failure are keyed.
const (
	actReadCheckpoint = "read checkpoint"
	actCheckFill      = "check buffer fill"
	actBuildClient    = "build management client"
	actToken          = "fetch auth0 token"
	actFetch          = "fetch log page"
	actDecode         = "decode log page"
	actAppend         = "append page to buffer"
	actResume         = "resume after lost buffer data"
)

// recovered logs, for each action that was failing, that it succeeded again.
func (p *Poller) recovered(ctx context.Context, actions ...string) {
	for _, a := range actions {
		if ep, ok := p.rep.Clear(a); ok {
			p.log.InfoContext(ctx, "auth0 polling recovered", "action", a, "from", p.cp,
				"failures", ep.Failures, "failing_for", ep.Duration.Round(time.Second).String())
		}
	}
}

// redact returns err's text without the client secret (in any of the forms
// a token request carries it) and bounded in length.
func (p *Poller) redact(err error) string {
	return redactSecret(p.cfg.ClientID, p.cfg.ClientSecret, err.Error())
}

// redactSecret returns s without the client secret, in any of the forms a
// token request carries it, and bounded in length.
func redactSecret(clientID string, secret config.Secret, s string) string {
	if v := secret.Reveal(); v != "" {
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(clientID) + ":" + url.QueryEscape(v)))
		for _, form := range []string{v, url.QueryEscape(v), basic} {
			s = strings.ReplaceAll(s, form, "<secret>")
		}
	}
	if len(s) > maxErrLen {
		s = s[:maxErrLen] + "…"
	}
	return s
}

// checkGap reports, once per episode, that the position fell behind
// Auth0's retention.
func (p *Poller) checkGap() {
	now := p.clock.Now()
	horizon := now.Add(-p.cfg.Retention)
	pos := p.position()
	if p.inGap || pos.IsZero() || !pos.Add(gapSlack).Before(horizon) {
		return
	}
	p.inGap, p.gapFrom = true, pos
	// Log before counting: whoever sees the counter move finds the interval logged.
	p.log.Error("auth0 logs lost to retention: checkpoint is older than the retention window",
		"lost_from", pos.UTC(), "lost_until", horizon.UTC(), "retention", p.cfg.Retention.String(), "checkpoint", p.cp)
	p.m.gaps.Inc()
}

func (p *Poller) setPaused(full bool) {
	if full == p.paused {
		return
	}
	p.paused = full
	if full {
		p.m.paused.Set(1)
		p.log.Warn("buffer full; polling paused (Auth0 keeps the logs meanwhile)", "checkpoint", p.cp)
		return
	}
	p.m.paused.Set(0)
	p.log.Info("buffer has room; polling resumed", "checkpoint", p.cp)
}

func (p *Poller) markSuccess() {
	now := p.clock.Now()
	p.ready.Store(true)
	p.lastSuccess.Store(now.UnixNano())
	p.m.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
}

func (p *Poller) setCheckpoint(cp string) error {
	t, err := auth0log.IDTime(cp)
	if err != nil {
		return err
	}
	p.cp = cp
	p.mu.Lock()
	p.cpTime = t
	p.mu.Unlock()
	return nil
}

func (p *Poller) setCaughtUp(t time.Time) {
	p.mu.Lock()
	p.caughtUp = t
	p.mu.Unlock()
}

// position is the time up to which every log is known to be buffered: the
// later of the checkpoint's time and the start of the last short poll.
func (p *Poller) position() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.caughtUp.After(p.cpTime) {
		return p.caughtUp
	}
	return p.cpTime
}

func (p *Poller) lagSeconds() float64 {
	pos := p.position()
	if pos.IsZero() {
		return 0
	}
	return max(p.clock.Since(pos).Seconds(), 0)
}

// sleep waits d by the injected clock; false when ctx ended first.
func (p *Poller) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := p.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.Chan():
		return true
	}
}

// backoff is exponential backoff with equal jitter: attempt n waits between
// half and all of base·2ⁿ, capped at max.
type backoff struct {
	base, max time.Duration
	attempt   int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.attempt < 30 {
		d = min(b.base<<b.attempt, b.max)
	}
	b.attempt++
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b *backoff) reset() { b.attempt = 0 }
