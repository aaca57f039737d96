package auth0stream

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/auth0log"
	"github.com/authpipe/authpipe/internal/inject"
	"github.com/authpipe/authpipe/internal/logrepeat"
)

// Paths the receiver serves: PathPrefix alone for the single tenant,
// PathPrefix + "/" + name for each tenant.
const PathPrefix = "/auth0/logs"

// Commit is what one request committed to a tenant's buffer.
type Commit struct {
	Tenant string
	// At is when the commit finished (the receiver's clock).
	At time.Time
	// Records counts the request's records, repeats of a log_id within it
	// included.
	Records int
	// Logs are the request's logs, each log_id once (its first record), in
	// body order. Their Raw fields share one buffer per request: read, do
	// not modify.
	Logs []auth0log.Log
	// New[i] reports that Logs[i] was stored by this request: the stream
	// delivered it first. When Uncertain is 0 (the rule) New is exact.
	New []bool
	// Added is how many of Logs the buffer newly stored: exact.
	Added int
	// Uncertain counts logs marked New that another writer (the poller, or
	// a concurrent push of the same logs) stored between this request's
	// dedupe read and its append, so that only Added of the marked ones
	// are this request's. Rare: it needs a race of a few milliseconds.
	Uncertain int
}

// Receiver is the Log Streams receiver, an http.Handler: POST /auth0/logs
// (the one tenant, when there is one) and POST /auth0/logs/{tenant}.
// Safe for concurrent use.
type Receiver struct {
	cfg      Config
	tenants  map[string]*tenant
	only     *tenant // the tenant of PathPrefix alone; nil with several
	clock    clockwork.Clock
	onCommit func(Commit)
	rep      *logrepeat.Summarizer
	unrouted *prometheus.CounterVec // requests that reach no tenant
	slots    chan struct{}          // one per commit in flight
}

type tenant struct {
	name   string
	token  [sha256.Size]byte // of the token: comparisons take the same time whatever its length
	buf    Buffer
	m      *tenantMetrics
	lastNS atomic.Int64 // last commit with events, Unix ns; 0 before the first
}

// New builds the receiver of tenants.
func New(tenants []Tenant, cfg Config, deps Deps) (*Receiver, error) {
	if err := errors.Join(cfg.Validate(), validateTenants(tenants)); err != nil {
		return nil, err
	}
	cfg, deps = cfg.withDefaults(), deps.withDefaults()
	unrouted, err := newUnrouted(deps.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Receiver{
		cfg:      cfg,
		tenants:  make(map[string]*tenant, len(tenants)),
		clock:    deps.Clock,
		onCommit: deps.OnCommit,
		rep:      logrepeat.New(deps.Logger.With("component", "stream"), deps.Clock, 0),
		unrouted: unrouted,
		slots:    make(chan struct{}, cfg.MaxInFlight),
	}
	for _, t := range tenants {
		reg := t.Registerer
		inject.Defaults(nil, &reg, nil)
		m, err := newTenantMetrics(reg)
		if err != nil {
			return nil, fmt.Errorf("stream tenant %q: %w", t.Name, err)
		}
		r.tenants[t.Name] = &tenant{name: t.Name, token: sha256.Sum256([]byte(t.Token.Reveal())), buf: t.Buffer, m: m}
	}
	if len(tenants) == 1 {
		r.only = r.tenants[tenants[0].Name]
	}
	return r, nil
}

// answer is a request's outcome and the message sent with it.
type answer struct {
	outcome string
	msg     string
	err     error // what to log; nil for ok
}

// ServeHTTP answers one Log Streams request.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	t := r.route(req.URL.Path)
	if t == nil {
		r.finish(w, req, nil, answer{outcome: OutcomeNotFound,
			msg: "not found: POST log stream batches to " + PathPrefix + "/{tenant}" + r.singleHint()})
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		r.finish(w, req, t, answer{outcome: OutcomeMethodNotAllowed, msg: "method not allowed: use POST"})
		return
	}
	if !t.authorized(req.Header["Authorization"]) {
		r.finish(w, req, t, answer{outcome: OutcomeUnauthorized,
			msg: "unauthorized: the Authorization header must be the stream's Authorization Token",
			err: errors.New("wrong or missing Authorization header")})
		return
	}
	if req.ContentLength > r.cfg.MaxBodyBytes {
		r.finish(w, req, t, r.tooLarge()) // known from the header: not read at all
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			r.finish(w, req, t, r.tooLarge())
			return
		}
		r.finish(w, req, t, answer{outcome: OutcomeBadRequest, msg: "read request body: nothing stored",
			err: fmt.Errorf("read request body: %w", err)})
		return
	}
	_, logs, err := ParseBody(body)
	if err != nil {
		r.finish(w, req, t, answer{outcome: OutcomeBadRequest, msg: err.Error() + ": nothing of this request stored", err: err})
		return
	}
	c, a := r.commit(req.Context(), t, logs)
	if a.outcome == OutcomeOK {
		a.msg = fmt.Sprintf(`{"records":%d,"new":%d}`, c.Records, c.Added)
	}
	r.finish(w, req, t, a)
}

func (r *Receiver) tooLarge() answer {
	return answer{outcome: OutcomeTooLarge,
		msg: fmt.Sprintf("request body over %d bytes: nothing stored", r.cfg.MaxBodyBytes),
		err: fmt.Errorf("body over %d bytes", r.cfg.MaxBodyBytes)}
}

// singleHint tells where a single tenant's stream may also post.
func (r *Receiver) singleHint() string {
	if r.only != nil {
		return " or " + PathPrefix
	}
	return ""
}

// route returns the tenant a path names, or nil.
func (r *Receiver) route(path string) *tenant {
	if path == PathPrefix {
		return r.only
	}
	name, ok := strings.CutPrefix(path, PathPrefix+"/")
	if !ok {
		return nil
	}
	return r.tenants[name]
}

// authorized reports whether the request carries exactly one Authorization
// header equal to the tenant's token, in time independent of the token.
func (t *tenant) authorized(values []string) bool {
	if len(values) != 1 {
		return false
	}
	got := sha256.Sum256([]byte(values[0]))
	return subtle.ConstantTimeCompare(got[:], t.token[:]) == 1
}

// Errors of a commit that the answer tells apart.
var (
	errFull    = errors.New("buffer full")
	errTimeout = errors.New("buffer did not answer in time")
)

// commit stores logs in t's buffer within CommitTimeout and reports the
// answer. The buffer work runs in a goroutine of its own so that a buffer
// that hangs (whatever its client's timeouts) cannot hold the request past
// the bound; MaxInFlight bounds those goroutines.
func (r *Receiver) commit(ctx context.Context, t *tenant, logs []auth0log.Log) (Commit, answer) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CommitTimeout)
	defer cancel()
	records := len(logs)
	unavailable := func(err error) (Commit, answer) {
		t.m.events.WithLabelValues(OutcomeUnavailable).Add(float64(records))
		return Commit{}, answer{outcome: OutcomeUnavailable, err: err,
			msg: "buffer unavailable: nothing acknowledged, retry later"}
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return unavailable(fmt.Errorf("wait for a free commit slot (%d in flight): %w", cap(r.slots), errTimeout))
	}
	type result struct {
		c   Commit
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-r.slots }()
		c, err := r.store(ctx, t, logs)
		done <- result{c, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return unavailable(fmt.Errorf("commit %d records: %w", records, errTimeout))
	}
	switch {
	case errors.Is(res.err, errFull):
		t.m.events.WithLabelValues(OutcomeFull).Add(float64(records))
		return Commit{}, answer{outcome: OutcomeFull, err: res.err,
			msg: "buffer full: nothing acknowledged, retry later"}
	case res.err != nil:
		return unavailable(res.err)
	}
	return res.c, answer{outcome: OutcomeOK}
}

// store commits logs to t's buffer: nothing when it is full, else every
// record, deduplicated by log_id, without a checkpoint.
func (r *Receiver) store(ctx context.Context, t *tenant, logs []auth0log.Log) (Commit, error) {
	full, err := t.buf.Full(ctx)
	if err != nil {
		return Commit{}, fmt.Errorf("read buffer fill: %w", err)
	}
	if full {
		return Commit{}, errFull
	}
	c := Commit{Tenant: t.name, Records: len(logs), Logs: logs[:0:0]}
	ids := make([]string, 0, len(logs))
	first := make(map[string]bool, len(logs))
	for _, l := range logs {
		if !first[l.ID] {
			first[l.ID] = true
			c.Logs = append(c.Logs, l)
			ids = append(ids, l.ID)
		}
	}
	var seen []bool
	if len(ids) > 0 {
		if seen, err = t.buf.Seen(ctx, ids); err != nil {
			return Commit{}, err
		}
		if c.Added, err = t.buf.Append(ctx, c.Logs, ""); err != nil {
			return Commit{}, fmt.Errorf("append %d logs: %w", len(c.Logs), err)
		}
	}
	c.New = make([]bool, len(c.Logs))
	candidates := 0
	for i := range c.Logs {
		c.New[i] = !seen[i]
		if c.New[i] {
			candidates++
		}
	}
	c.Uncertain = max(candidates-c.Added, 0)
	c.At = r.clock.Now()
	t.m.events.WithLabelValues(OutcomeNew).Add(float64(c.Added))
	t.m.events.WithLabelValues(OutcomeDuplicate).Add(float64(c.Records - c.Added))
	if c.Records > 0 {
		t.lastNS.Store(c.At.UnixNano())
		t.m.lastEvent.Set(float64(c.At.UnixNano()) / 1e9)
	}
	if r.onCommit != nil && c.Records > 0 {
		r.onCommit(c)
	}
	return c, nil
}

// logLevel is the level of a refused outcome's log line. Unknown paths
// and methods are the internet's noise: debug.
func logLevel(outcome string) slog.Level {
	switch outcome {
	case OutcomeUnavailable:
		return slog.LevelError
	case OutcomeNotFound, OutcomeMethodNotAllowed:
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// finish writes the answer, counts it and logs it (a refused outcome's
// first occurrence in full, its repeats summarised; the first 200 after
// them one recovered line).
func (r *Receiver) finish(w http.ResponseWriter, req *http.Request, t *tenant, a answer) {
	name, requests := "", r.unrouted
	if t != nil {
		name, requests = t.name, t.m.requests
	}
	status := statusOf(a.outcome)
	requests.WithLabelValues(strconv.Itoa(status), a.outcome).Inc()
	ctx := req.Context()
	if a.outcome == OutcomeOK {
		for _, o := range tenantOutcomes {
			r.rep.OK(ctx, name+"/"+o)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, a.msg)
		return
	}
	err := a.err
	if err == nil {
		err = errors.New(a.outcome)
	}
	r.rep.Fail(ctx, name+"/"+a.outcome, logLevel(a.outcome), "stream request not acknowledged", err,
		"tenant", name, "status", status, "outcome", a.outcome)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	msg, _ := json.Marshal(map[string]string{"error": a.msg})
	_, _ = w.Write(msg)
}

var _ http.Handler = (*Receiver)(nil)
