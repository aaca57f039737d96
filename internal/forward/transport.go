package forward

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/authpipe/authpipe/internal/logrepeat"
)

// StatusError is a non-2xx answer of Segment, as the transport returns it to
// analytics-go (which hands it, wrapped in a *url.Error, to the Failure
// callback). Use errors.As.
type StatusError struct {
	Code       int
	Status     string        // e.g. "400 Bad Request"
	Permanent  bool          // the batch will never be accepted as it is
	RetryAfter time.Duration // 429 only: how long Segment asked to wait
}

func (e *StatusError) Error() string {
	kind := "transient"
	if e.Permanent {
		kind = "permanent"
	}
	return fmt.Sprintf("segment answered %s (%s)", e.Status, kind)
}

// errBackingOff is returned instead of sending when a wait imposed by an
// earlier answer does not fit in the request's remaining time: the attempt
// fails without network traffic. Transient.
var errBackingOff = errors.New("segment: backing off after earlier failures")

// errStopping is returned instead of waiting once the forwarder shuts down.
var errStopping = errors.New("segment: backoff aborted by shutdown")

// Segment request outcome labels (authpipe_forward_segment_requests_total{code}).
var codeLabels = []string{"2xx", "400", "401", "403", "413", "429", "5xx", "other4xx", "error"}

const (
	// authPause is how long every request waits after Segment rejected the
	// write key: a configuration problem that retries will not fix soon.
	authPause = time.Minute
	// defaultRetryAfter applies to a 429 without a usable Retry-After.
	defaultRetryAfter = time.Second
	// maxRetryAfter caps the pause a 429 can impose.
	maxRetryAfter = 10 * time.Minute
	// deadlineMargin: a wait must end this long before the request's
	// deadline, or net/http replaces our error with its own timeout error.
	deadlineMargin = 250 * time.Millisecond
	// bodyStateTTL forgets a batch body's retry state after this long
	// without an attempt (analytics-go gives up after 10 attempts of at most
	// ~10 s each).
	bodyStateTTL = 5 * time.Minute
	// maxDrain bounds how much of an error body is read (and discarded) so
	// the connection can be reused.
	maxDrain = 64 << 10
)

// transport is the classifying http.RoundTripper under both analytics-go
// clients. It owns retry timing: analytics-go's RetryAfter is a few
// milliseconds, and this transport makes the next attempt of the same body
// wait (per-body exponential backoff for 5xx, 408 and network errors; a
// shared pause for 429 and for a rejected write key), and answers attempts of
// a permanently rejected body at once without network.
type transport struct {
	base       http.RoundTripper
	clock      clockwork.Clock
	log        *slog.Logger
	rep        *logrepeat.Summarizer // Segment outages: one line, then a summary a minute
	minBackoff time.Duration
	maxBackoff time.Duration
	requests   map[string]prometheus.Counter // by code label

	stop     chan struct{}
	stopOnce sync.Once

	mu         sync.Mutex
	pauseUntil time.Time
	bodies     map[bodyKey]*bodyState
	calls      int
	seeds      [2]maphash.Seed // of bodyKey
}

// bodyKey identifies a batch body: two 64-bit hashes of it with seeds of
// this process. Nobody chooses the bodies, so two of those remembered at
// once share a key with a chance of about 2^-128 per pair; SHA-256 did the
// same for 1–2 µs of CPU per event (a 250 kB body per batch, hashed at
// every attempt), ten times maphash's cost.
type bodyKey [2]uint64

func (t *transport) key(body []byte) bodyKey {
	return bodyKey{maphash.Bytes(t.seeds[0], body), maphash.Bytes(t.seeds[1], body)}
}

// bodyState is the retry state of one batch body (analytics-go resends the
// same bytes on every attempt of a batch).
type bodyState struct {
	failures  int
	nextAt    time.Time
	permanent *StatusError
	lastSeen  time.Time
}

func newTransport(clock clockwork.Clock, log *slog.Logger, minBackoff, maxBackoff time.Duration, requests *prometheus.CounterVec) *transport {
	base := http.DefaultTransport.(*http.Transport).Clone()
	t := &transport{
		base:       base,
		clock:      clock,
		log:        log,
		rep:        logrepeat.New(log, clock, 0),
		minBackoff: minBackoff,
		maxBackoff: maxBackoff,
		requests:   map[string]prometheus.Counter{},
		stop:       make(chan struct{}),
		bodies:     map[bodyKey]*bodyState{},
		seeds:      [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
	for _, c := range codeLabels {
		t.requests[c] = requests.WithLabelValues(c)
	}
	return t
}

// shutdown makes every current and future wait fail at once. Requests that
// need no wait are still sent (the final flush of analytics-go's Close).
func (t *transport) shutdown() {
	t.stopOnce.Do(func() { close(t.stop) })
}

// closeIdle releases the pooled connections.
func (t *transport) closeIdle() {
	if b, ok := t.base.(*http.Transport); ok {
		b.CloseIdleConnections()
	}
}

// pausedUntil reports the shared pause (429 or rejected write key).
func (t *transport) pausedUntil() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pauseUntil
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readBody(req)
	if err != nil {
		t.requests["error"].Inc()
		return nil, fmt.Errorf("read request body: %w", err)
	}
	key := t.key(body)

	t.mu.Lock()
	st := t.state(key)
	perm := st.permanent
	t.mu.Unlock()
	if perm != nil {
		// Already rejected for good: analytics-go would otherwise resend it
		// for minutes. Its Failure callback gets this error right away.
		return nil, perm
	}

	if err := t.wait(req.Context(), st); err != nil {
		return nil, err
	}

	out := req.Clone(req.Context())
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	out.ContentLength = int64(len(body))
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		t.requests["error"].Inc()
		t.rep.Fail(req.Context(), segFailing, slog.LevelWarn, "Segment request failed: retrying the batch after backoff", err, "backoff", t.fail(st))
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		t.requests["2xx"].Inc()
		t.recovered(req.Context())
		t.mu.Lock()
		delete(t.bodies, key)
		t.mu.Unlock()
		return resp, nil
	}

	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain)) // never logged: may echo messages
	_ = resp.Body.Close()
	se := &StatusError{Code: resp.StatusCode,
		Status: cmp.Or(resp.Status, strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode))}
	code := resp.StatusCode
	switch {
	case code == http.StatusTooManyRequests:
		t.requests["429"].Inc()
		se.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), t.clock.Now())
		t.pause(se.RetryAfter)
		// The body backs off too, so a Retry-After of 0 is no hot loop.
		t.rep.Fail(req.Context(), segLimited, slog.LevelWarn, "Segment rate limit: pausing all requests", se, "retry_after", se.RetryAfter, "backoff", t.fail(st))
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		t.requests[strconv.Itoa(code)].Inc()
		t.pause(authPause)
		t.rep.Fail(req.Context(), segRefused, slog.LevelError, "Segment rejected the write key: check SEGMENT_WRITE_KEY; pausing all requests",
			se, "code", code, "pause", authPause)
	case code == http.StatusRequestTimeout:
		t.requests["other4xx"].Inc()
		t.rep.Fail(req.Context(), segFailing, slog.LevelWarn, "Segment request failed: retrying the batch after backoff", se, "code", code, "backoff", t.fail(st))
	case code >= 500:
		t.requests["5xx"].Inc()
		t.rep.Fail(req.Context(), segFailing, slog.LevelWarn, "Segment request failed: retrying the batch after backoff", se, "code", code, "backoff", t.fail(st))
	case code >= 400:
		label := "other4xx"
		if code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge {
			label = strconv.Itoa(code)
		}
		t.requests[label].Inc()
		se.Permanent = true
		t.mu.Lock()
		st.permanent = se
		t.mu.Unlock()
	default: // 1xx, 3xx: Segment never answers these; treat as transient
		t.requests["error"].Inc()
		t.rep.Fail(req.Context(), segFailing, slog.LevelWarn, "Segment request failed: unexpected status; retrying the batch after backoff", se, "code", code, "backoff", t.fail(st))
	}
	return nil, se
}

// Kinds of Segment failure, summarised apart (logrepeat keys).
const (
	segFailing = "segment failing"
	segLimited = "segment rate limit"
	segRefused = "segment write key refused"
)

// recovered logs one line when Segment accepts a batch after failures of
// any kind, with how long and how often it failed.
func (t *transport) recovered(ctx context.Context) {
	for _, kind := range []string{segFailing, segLimited, segRefused} {
		if ep, ok := t.rep.Clear(kind); ok {
			t.log.InfoContext(ctx, "Segment accepts batches again", "after", kind, "failures", ep.Failures, "failing_for", ep.Duration.Round(time.Second).String())
		}
	}
}

// state returns the retry state of a body, creating it. Callers hold mu.
func (t *transport) state(key bodyKey) *bodyState {
	now := t.clock.Now()
	t.calls++
	if t.calls%256 == 0 {
		for k, s := range t.bodies {
			if now.Sub(s.lastSeen) > bodyStateTTL {
				delete(t.bodies, k)
			}
		}
	}
	st := t.bodies[key]
	if st == nil {
		st = &bodyState{}
		t.bodies[key] = st
	}
	st.lastSeen = now
	return st
}

// fail schedules the next attempt of a body after exponential backoff with
// jitter, and returns the wait.
func (t *transport) fail(st *bodyState) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	st.failures++
	d := jitter(backoff(t.minBackoff, t.maxBackoff, st.failures))
	st.nextAt = t.clock.Now().Add(d)
	return d
}

// pause makes every request wait at least d from now.
func (t *transport) pause(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if until := t.clock.Now().Add(d); until.After(t.pauseUntil) {
		t.pauseUntil = until
	}
}

// wait blocks until the shared pause and the body's backoff are over. A wait
// that cannot end before the request's deadline waits what it can and fails
// with errBackingOff (no network traffic); shutdown aborts it.
func (t *transport) wait(ctx context.Context, st *bodyState) error {
	for {
		t.mu.Lock()
		until := t.pauseUntil
		if st.nextAt.After(until) {
			until = st.nextAt
		}
		t.mu.Unlock()
		now := t.clock.Now()
		d := until.Sub(now)
		if d <= 0 {
			return nil
		}
		var err error
		if deadline, ok := ctx.Deadline(); ok {
			// net/http sets the deadline on the real clock.
			if room := time.Until(deadline) - deadlineMargin; room < d {
				d, err = max(room, 0), errBackingOff
			}
		}
		timer := t.clock.NewTimer(d)
		select {
		case <-timer.Chan():
		case <-t.stop:
			timer.Stop()
			return errStopping
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		if err != nil {
			return err
		}
	}
}

// readBody reads and closes the request body.
func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	if n := req.ContentLength; n > 0 && n <= maxBatchBody {
		// analytics-go gives the length: one buffer of that size instead of
		// io.ReadAll's growing ones (a batch is about 250 kB, and io.ReadAll
		// allocated about twice that for each).
		b := bytes.NewBuffer(make([]byte, 0, n+bytes.MinRead))
		_, err := b.ReadFrom(req.Body)
		return b.Bytes(), err
	}
	return io.ReadAll(req.Body)
}

// maxBatchBody bounds the buffer readBody sizes from a request's length:
// analytics-go's limit for a batch (500 kB) with room to spare.
const maxBatchBody = 1 << 20

// parseRetryAfter reads Retry-After as seconds or an HTTP date, clamped to
// [0, maxRetryAfter]; absent or unusable gives defaultRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return defaultRetryAfter
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	} else {
		return defaultRetryAfter
	}
	return min(max(d, 0), maxRetryAfter)
}

// backoff is min·2^(n-1), capped at max, for the n-th consecutive failure.
func backoff(minD, maxD time.Duration, n int) time.Duration {
	d := minD
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

// jitter spreads d over [d/2, d] so batches that failed together do not
// retry together.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}
